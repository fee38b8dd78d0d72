"""pgcrypto is installed in the database, not merely available on the server."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    row = ctx.conn.execute(
        "SELECT n.nspname, e.extversion FROM pg_catalog.pg_extension e "
        "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'pgcrypto'"
    ).fetchone()
    if row is not None:
        return []
    available = ctx.scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pgcrypto')"
    )
    detail = ("pgcrypto is available on the server but not installed in this database"
              if available else "pgcrypto is not available on the server (postgresql-contrib)")
    return [CHECK.finding("extension pgcrypto", detail)]


CHECK = Check(
    id="pgcrypto-installed",
    title="pgcrypto installed",
    category="encryption",
    level="error",
    description="pg_extension has pgcrypto (the trigger's pgp_sym_encrypt). Needs: catalog read.",
    remediation="CREATE EXTENSION pgcrypto WITH SCHEMA extensions (chatsec deploy does)",
    run=_run,
)
