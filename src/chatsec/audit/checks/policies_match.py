"""The exact policy set per table, as declared in policies/ (expressions compared normalized)."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.diffmap import findings_from
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    return findings_from(CHECK, ctx.changes, lambda c: c.kind == "policy")


CHECK = Check(
    id="policies-match",
    title="Policies exactly as declared",
    category="declared-state",
    level="error",
    description="Missing, extra and changed policies against policies/, expressions compared "
                "after PostgreSQL's own normalization (pg_get_expr of a temporary copy). "
                "Needs: TEMPORARY on the database.",
    remediation="bring the policies back to policies/ with `chatsec plan` / `chatsec revision`",
    run=_run,
)
