"""Grants to every other named role (chat_auditor, ...) exactly as declared."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import APP_ROLE, AuditContext
from chatsec.audit.diffmap import GRANT_KINDS, findings_from, grantee
from chatsec.audit.finding import Finding
from chatsec.policy.model import PUBLIC


def _run(ctx: AuditContext) -> list[Finding]:
    # app_user and PUBLIC have checks of their own.
    return findings_from(
        CHECK, ctx.changes,
        lambda c: c.kind in GRANT_KINDS and grantee(c) not in {APP_ROLE, PUBLIC},
    )


CHECK = Check(
    id="grants-match",
    title="Other roles' grants as declared",
    category="privileges",
    level="error",
    description="Privileges on the chat schemas' objects held by roles other than app_user and "
                "PUBLIC, against policies/. Needs: catalog read.",
    remediation="GRANT / REVOKE as `chatsec plan` shows",
    run=_run,
)
