"""Run checks one by one, each in its own rolled-back transaction, and time them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from chatsec.audit.check import Check, Skip
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import SEVERITY, CheckResult, Level
from chatsec.errors import ChatsecError


@dataclass
class AuditReport:
    target: str
    user: str
    started_at: datetime
    results: list[CheckResult] = field(default_factory=list)
    duration_s: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def findings_at(self, level: Level) -> int:
        return sum(1 for r in self.results for f in r.findings if f.level == level)

    def exit_code(self, fail_on: Level) -> int:
        threshold = SEVERITY[fail_on]
        return 1 if any(r.worst() >= threshold for r in self.results) else 0


def _reason(exc: psycopg.Error) -> str:
    text = (exc.diag.message_primary if exc.diag else None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def run_check(ctx: AuditContext, check: Check) -> CheckResult:
    result = CheckResult(check.id, check.title, check.category, check.level, check.description,
                         "passed")
    start = time.perf_counter()
    try:
        # Nothing a check does may persist (temp objects, probe rows): always roll back.
        with ctx.conn.transaction(force_rollback=True):
            # Only pg_catalog on the path: regclass/regprocedure then print every other
            # schema, so objects are named the same whatever the login's search_path.
            ctx.conn.execute("SET LOCAL search_path = pg_catalog")
            findings = check.run(ctx)
        result.findings = findings
        result.status = CheckResult.status_for(findings)
    except Skip as exc:
        result.status, result.skip_reason = "skipped", str(exc)
    except psycopg.errors.InsufficientPrivilege as exc:
        # Fail closed: not knowing is reported as such, naming what was refused.
        result.status = "skipped"
        result.skip_reason = f"the audit login lacks a privilege: {_reason(exc)}"
    except (ChatsecError, psycopg.Error) as exc:
        reason = str(exc) if isinstance(exc, ChatsecError) else _reason(exc)
        result.findings = [check.finding("(check)", f"the check could not run: {reason}",
                                         level="error")]
        result.status = "failed"
    result.duration_s = time.perf_counter() - start
    return result


def run_audit(ctx: AuditContext, checks: Sequence[Check]) -> AuditReport:
    report = AuditReport(ctx.url.target, ctx.url.user or "", datetime.now(UTC))
    start = time.perf_counter()
    for check in checks:
        report.results.append(run_check(ctx, check))
    report.duration_s = time.perf_counter() - start
    return report
