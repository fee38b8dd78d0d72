"""The declared schemas and tables exist with their declared owners; no undeclared table."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.diffmap import findings_from
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    return findings_from(CHECK, ctx.changes, lambda c: c.kind in {"schema", "table"})


CHECK = Check(
    id="objects-match",
    title="Schemas and tables as declared",
    category="declared-state",
    level="error",
    description="Schema owners, missing and undeclared tables against policies/. "
                "Needs: catalog read.",
    remediation="declare the table in policies/ (with RLS and policies) or drop it",
    run=_run,
)
