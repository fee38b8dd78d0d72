"""Behaviour: through the application login, no identity without a valid signed token."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.audit.probe import app_login, run_identity_probe


def _run(ctx: AuditContext) -> list[Finding]:
    return run_identity_probe(app_login(ctx), ctx.probe.identity_keyring).findings(CHECK)


CHECK = Check(
    id="probe-identity",
    title="Only a valid signed token gives an identity",
    category="behaviour",
    level="error",
    description="As the app login, in transactions that are always rolled back: a bare "
    "app.user_id, a made-up token, a token whose MAC is off by one digit, another user's id "
    "under a valid MAC, an expired token, and a token replayed after it expired each leave "
    "chat.current_user_id() NULL, while a fresh token gives its user (the control that "
    "makes the others mean something). Needs: --app-url (CHATSEC_APP_DATABASE_URL); "
    "--identity-keyring (CHATSEC_IDENTITY_KEYRING) for the sub-probes that need a real "
    "key: without it the check is skipped naming them (never passed), and a violation "
    "found by the others still fails it.",
    remediation="deploy revision 0011 (signed identity) and register an identity key "
    "(chatsec keys identity generate); restore chat.current_user_id() from policies/",
    run=_run,
)
