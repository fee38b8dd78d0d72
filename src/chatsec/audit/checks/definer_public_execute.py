"""No SECURITY DEFINER function is executable by PUBLIC."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.checks.definer_search_path import DEFINERS
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

# A NULL proacl is the built-in default, which grants EXECUTE to PUBLIC.
_PUBLIC_EXECUTE = """
SELECT p.oid::pg_catalog.regprocedure::text, pg_catalog.pg_get_userbyid(p.proowner)
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace,
       pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
 WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND a.grantee = 0 AND a.privilege_type = 'EXECUTE'
 ORDER BY 1
"""


def definer_identities(ctx: AuditContext) -> set[str]:
    return {str(r[0]) for r in ctx.conn.execute(DEFINERS).fetchall()}


def _run(ctx: AuditContext) -> list[Finding]:
    return [
        CHECK.finding(str(ident), f"SECURITY DEFINER (runs as {owner}) and executable by "
                      "PUBLIC: every login of the database may call it with its owner's rights",
                      remediation=f"REVOKE EXECUTE ON FUNCTION {ident} FROM PUBLIC")
        for ident, owner in ctx.conn.execute(_PUBLIC_EXECUTE).fetchall()
    ]


CHECK = Check(
    id="definer-public-execute",
    title="No SECURITY DEFINER function executable by PUBLIC",
    category="functions",
    level="error",
    description="Effective ACL (PostgreSQL's default included) of every SECURITY DEFINER "
                "function in user schemas. Needs: catalog read.",
    remediation="REVOKE EXECUTE ON FUNCTION ... FROM PUBLIC",
    run=_run,
)
