"""Run checks one by one, each in its own rolled-back transaction, and time them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg

from chatsec.audit.check import Check, Skip
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import LEVELS, SEVERITY, CheckResult, Level
from chatsec.errors import ChatsecError

# The object of the finding a crashed check reports. The allowlist never accepts it: a
# check that could not run verified nothing, so there is no finding to accept.
COULD_NOT_RUN_OBJECT = "(check)"


@dataclass
class AuditReport:
    target: str
    user: str
    started_at: datetime
    results: list[CheckResult] = field(default_factory=list)
    duration_s: float = 0.0
    # About the audit itself rather than the database (e.g. an expired allowlist entry);
    # every format shows them.
    notices: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for r in self.results if r.status == status)

    def findings_at(self, level: Level) -> int:
        """Findings at `level` that count (suppressed ones are counted by suppressed_count)."""
        return sum(1 for r in self.results for f in r.active_findings() if f.level == level)

    def suppressed_count(self) -> int:
        """Findings the allowlist accepted, at any level."""
        return sum(len(r.suppressed_findings()) for r in self.results)

    def worst_level(self) -> Level | None:
        """The most severe level among the findings that count; None when there is none."""
        worst = max((r.worst() for r in self.results), default=-1)
        return next((lvl for lvl in LEVELS if SEVERITY[lvl] == worst), None)

    def exit_code(self, fail_on: Level) -> int:
        threshold = SEVERITY[fail_on]
        return 1 if any(r.worst() >= threshold for r in self.results) else 0


def _reason(exc: psycopg.Error) -> str:
    text = (exc.diag.message_primary if exc.diag else None) or str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def run_check(ctx: AuditContext, check: Check) -> CheckResult:
    result = CheckResult(
        check.id, check.title, check.category, check.level, check.description, "passed"
    )
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
        result.findings = [
            check.finding(COULD_NOT_RUN_OBJECT, f"the check could not run: {reason}", level="error")
        ]
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
