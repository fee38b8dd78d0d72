"""No role has an MD5 password hash left over (only visible with read access to pg_authid)."""

from __future__ import annotations

from chatsec.audit.check import Check, Skip
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    # pg_roles masks rolpassword; only pg_authid has it, and only superusers read it.
    if not ctx.scalar("SELECT pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT')"):
        raise Skip("needs SELECT on pg_catalog.pg_authid (superuser only): run the audit as a "
                   "superuser to check stored password hashes")
    rows = ctx.conn.execute(
        "SELECT rolname FROM pg_catalog.pg_authid WHERE rolpassword LIKE 'md5%%' ORDER BY 1"
    ).fetchall()
    return [CHECK.finding(str(r[0]), f"role {r[0]} has an MD5 password hash",
                          remediation=f"ALTER ROLE \"{r[0]}\" PASSWORD ... (with "
                                      "password_encryption = scram-sha-256)")
            for r in rows]


CHECK = Check(
    id="md5-passwords",
    title="No MD5 password hashes",
    category="server",
    level="error",
    description="pg_authid.rolpassword of every role. Needs: SELECT on pg_authid (superuser); "
                "skipped otherwise.",
    remediation="reset the password with password_encryption = scram-sha-256",
    run=_run,
)
