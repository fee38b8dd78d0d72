"""Every chat table forces row level security, so the owner is bound by the policies too."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.checks.rls_enabled import TABLES
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    rows = ctx.conn.execute(TABLES, (sorted(ctx.declared.schemas),)).fetchall()
    return [
        CHECK.finding(str(name), "row level security is not forced: the table owner (and the "
                      "SECURITY DEFINER functions running as it) bypass every policy",
                      remediation=f"ALTER TABLE {name} FORCE ROW LEVEL SECURITY")
        for name, _enabled, forced in rows if not forced
    ]


CHECK = Check(
    id="rls-forced",
    title="Row level security forced on every chat table",
    category="declared-state",
    level="error",
    description="pg_class.relforcerowsecurity for every table in the declared schemas. "
                "Needs: catalog read (any login).",
    remediation="ALTER TABLE ... FORCE ROW LEVEL SECURITY",
    run=_run,
)
