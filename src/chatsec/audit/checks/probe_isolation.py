"""Behaviour: as the application login, one user cannot read or write into another's thread."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import (
    ENCRYPT_FUNCTION,
    ENCRYPT_TRIGGER,
    MESSAGES_TABLE,
    AuditContext,
)
from chatsec.audit.finding import Finding
from chatsec.audit.probe import app_login, run_isolation_probe


def _run(ctx: AuditContext) -> list[Finding]:
    app = app_login(ctx)
    trigger = bool(
        ctx.scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger WHERE tgrelid = "
            "pg_catalog.to_regclass(%s) AND (tgname = %s OR tgfoid = "
            "pg_catalog.to_regprocedure(%s)))",
            (MESSAGES_TABLE, ENCRYPT_TRIGGER, ENCRYPT_FUNCTION),
        )
    )
    outcome = run_isolation_probe(app, trigger, ctx.probe.keyring, ctx.probe.identity_keyring)
    return outcome.findings(CHECK)


CHECK = Check(
    id="probe-isolation",
    title="Isolation holds for the application login",
    category="behaviour",
    level="error",
    description="In one always-rolled-back transaction as the app login, two synthetic users: "
    "B cannot read A's thread, participants, profile or messages, cannot insert as "
    "A, cannot move a message into A's thread, and (with the encryption trigger) "
    "cannot store a message with no key. Needs: --app-url "
    "(CHATSEC_APP_DATABASE_URL); with signed identity deployed (revision 0011), "
    "--identity-keyring (CHATSEC_IDENTITY_KEYRING) to sign the users' identities, or "
    "it is skipped; with encryption deployed, --keyring for the "
    "message sub-probes: without it the check is skipped naming the sub-probes "
    "that could not run (never passed); a violation found by the others still "
    "fails it.",
    remediation="restore the policies from policies/ (chatsec plan)",
    run=_run,
)
