"""The declared roles' attributes and memberships (app_user's belong to app-user-attributes)."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import APP_ROLE, AuditContext
from chatsec.audit.diffmap import findings_from
from chatsec.audit.finding import Finding
from chatsec.policy.compare import Change


def _mine(change: Change) -> bool:
    if change.kind == "role":
        return change.object != APP_ROLE
    if change.kind == "membership":
        return change.object.partition(" in ")[0] != APP_ROLE
    return False


def _run(ctx: AuditContext) -> list[Finding]:
    return findings_from(CHECK, ctx.changes, _mine)


CHECK = Check(
    id="roles-match",
    title="Roles and memberships as declared",
    category="declared-state",
    level="error",
    description="Attributes and memberships of chat_owner, chat_auditor and every declared role "
                "except app_user (see app-user-attributes). Needs: catalog read.",
    remediation="ALTER ROLE / GRANT / REVOKE as `chatsec plan` shows",
    run=_run,
)
