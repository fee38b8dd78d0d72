"""Every table of the chat schemas has row level security enabled (declared or not)."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

# Every table of the declared schemas, not just the declared ones: an undeclared
# table without RLS is exactly what a forgotten migration leaves behind.
TABLES = """
SELECT n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = ANY(%s) AND n.nspname <> 'extensions' AND c.relkind IN ('r', 'p')
 ORDER BY 1
"""


def _run(ctx: AuditContext) -> list[Finding]:
    rows = ctx.conn.execute(TABLES, (sorted(ctx.declared.schemas),)).fetchall()
    return [
        CHECK.finding(str(name), "row level security is disabled: every row is visible to any "
                      "role with a table privilege",
                      remediation=f"ALTER TABLE {name} ENABLE ROW LEVEL SECURITY")
        for name, enabled, _forced in rows if not enabled
    ]


CHECK = Check(
    id="rls-enabled",
    title="Row level security enabled on every chat table",
    category="declared-state",
    level="error",
    description="pg_class.relrowsecurity for every table in the declared schemas. "
                "Needs: catalog read (any login).",
    remediation="ALTER TABLE ... ENABLE ROW LEVEL SECURITY",
    run=_run,
)
