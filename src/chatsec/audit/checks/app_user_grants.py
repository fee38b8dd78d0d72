"""Grants to app_user exactly as declared: tables, columns, sequences, functions, schemas."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import APP_ROLE, AuditContext
from chatsec.audit.diffmap import GRANT_KINDS, findings_from, grantee
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    return findings_from(
        CHECK, ctx.changes, lambda c: c.kind in GRANT_KINDS and grantee(c) == APP_ROLE
    )


CHECK = Check(
    id="app-user-grants",
    title="app_user grants exactly as declared",
    category="privileges",
    level="error",
    description="Table, column, sequence, function EXECUTE and schema USAGE/CREATE privileges "
                "of app_user against policies/. Needs: catalog read.",
    remediation="GRANT / REVOKE as `chatsec plan` shows",
    run=_run,
)
