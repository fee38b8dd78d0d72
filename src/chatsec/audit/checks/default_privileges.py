"""Default privileges of the owner as declared: objects created later start closed."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.diffmap import findings_from
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    return findings_from(CHECK, ctx.changes, lambda c: c.kind == "default-privilege")


CHECK = Check(
    id="default-privileges",
    title="Default privileges as declared",
    category="privileges",
    level="error",
    description="ALTER DEFAULT PRIVILEGES of the declared owners (tables, sequences, functions; "
                "PostgreSQL's EXECUTE-to-PUBLIC default included). Needs: catalog read.",
    remediation="ALTER DEFAULT PRIVILEGES FOR ROLE chat_owner REVOKE ... FROM PUBLIC",
    run=_run,
)
