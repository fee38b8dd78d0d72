"""Behaviour: through the application login, no identity without a valid signed token."""

from __future__ import annotations

from chatsec.audit.check import Check, Skip
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.audit.probe import run_identity_probe


def _run(ctx: AuditContext) -> list[Finding]:
    if not ctx.probe.enabled:
        raise Skip("probes disabled (--no-probe)")
    if ctx.probe.app_url is None:
        raise Skip("needs the application login: pass --app-url or set CHATSEC_APP_DATABASE_URL")
    outcome = run_identity_probe(ctx.probe.app_url, ctx.probe.identity_keyring)
    out = [CHECK.finding(obj, detail) for obj, detail in outcome.violations]
    if outcome.not_run and not out:
        raise Skip(
            f"not run: {'; '.join(outcome.not_run)} (the {len(outcome.checked)} "
            f"other sub-probe(s) ran and found nothing: {', '.join(outcome.checked)})"
        )
    out += [CHECK.finding("probe", f"not run: {what}", level="info") for what in outcome.not_run]
    return out


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
