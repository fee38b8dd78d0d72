"""Every SECURITY DEFINER function, in any schema, pins a search_path that names pg_temp last."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.audit.search_path import SAFE_PATH, function_paths

# All user schemas, not only chat: a definer function anywhere runs with its owner's rights.
DEFINERS = """
SELECT p.oid::pg_catalog.regprocedure::text, p.proconfig, pg_catalog.pg_get_userbyid(p.proowner)
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%%'
 ORDER BY 1
"""


def _run(ctx: AuditContext) -> list[Finding]:
    return [
        CHECK.finding(f.identity, f.problem(), remediation=f.remediation())
        for f in function_paths(ctx)
        if f.definer and f.unsafe
    ]


CHECK = Check(
    id="definer-search-path",
    title="SECURITY DEFINER functions pin a safe search_path",
    category="functions",
    level="error",
    description="proconfig of every SECURITY DEFINER function in user schemas has a "
    "search_path that names pg_temp last and no schema others may create in "
    "(public, $user); `''` fails: the caller's temporary schema is then searched first for "
    "types and relations. Needs: catalog read.",
    remediation=f"ALTER FUNCTION ... SET search_path = {SAFE_PATH}",
    run=_run,
)
