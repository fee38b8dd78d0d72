"""Behaviour: the application login cannot create a temporary object or a large object."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.audit.probe import app_login, run_escalation_probe

_WHY = {
    "temporary objects": "a temporary object outlives the request on a pooled connection and "
    "can shadow chat types and relations for the next one",
    "large objects": "a large object lives outside row-level security and the encryption trigger",
}


def _run(ctx: AuditContext) -> list[Finding]:
    outcome = run_escalation_probe(app_login(ctx))
    return [
        CHECK.finding(
            obj,
            f"{detail} ({_WHY.get(obj, 'it must be refused')}); the transaction was rolled back",
        )
        for obj, detail in outcome.violations
    ]


CHECK = Check(
    id="probe-escalation",
    title="The application login cannot create what outlives its transaction",
    category="behaviour",
    level="error",
    description="As the app login, in one always-rolled-back transaction: CREATE TEMPORARY "
    "TABLE, lo_create and lo_from_bytea must each be refused. Needs: --app-url "
    "(CHATSEC_APP_DATABASE_URL); skipped with --no-probe.",
    remediation="REVOKE TEMPORARY ON DATABASE ... FROM PUBLIC / app_user; chatsec harden-database",
    run=_run,
)
