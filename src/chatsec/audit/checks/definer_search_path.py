"""Every SECURITY DEFINER function pins a search_path that names pg_temp last.

Without pg_temp in the path PostgreSQL searches the caller's temporary schema
*first* for relations and types, so `search_path = ''` lets a caller's temporary
domain or view run code as the function's owner.
"""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.policy.load import checked_search_path

# All user schemas, not only chat: a definer function anywhere runs with its owner's rights.
DEFINERS = """
SELECT p.oid::pg_catalog.regprocedure::text, p.proconfig, pg_catalog.pg_get_userbyid(p.proowner)
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%%'
 ORDER BY 1
"""
SAFE_PATH = "pg_catalog, pg_temp"


def _search_path(config: object) -> str | None:
    for item in config or []:  # type: ignore[attr-defined]
        key, _, value = str(item).partition("=")
        if key == "search_path":
            return value
    return None


def definers_with_unsafe_search_path(ctx: AuditContext) -> set[str]:
    """The definer functions this check reports (no search_path, or an unsafe one)."""
    out = set()
    for ident, config, _ in ctx.conn.execute(DEFINERS).fetchall():
        path = _search_path(config)
        if path is None or checked_search_path(path) is None:
            out.add(str(ident))
    return out


def _run(ctx: AuditContext) -> list[Finding]:
    out = []
    for ident, config, owner in ctx.conn.execute(DEFINERS).fetchall():
        path = _search_path(config)
        if path is None:
            out.append(CHECK.finding(
                str(ident), f"SECURITY DEFINER (runs as {owner}) without a fixed search_path: "
                "the caller's search_path decides which tables and functions it uses",
                remediation=f"ALTER FUNCTION {ident} SET search_path = {SAFE_PATH}"))
            continue
        if checked_search_path(path) is None:
            out.append(CHECK.finding(
                str(ident), f"SECURITY DEFINER (runs as {owner}) with search_path {path or repr('')}: "
                "pg_temp is not named last (then the caller's temporary schema is searched "
                "first for types and relations) or a schema others may create in is on it, "
                "so a caller can make its own code run as the owner",
                remediation=f"ALTER FUNCTION {ident} SET search_path = {SAFE_PATH} "
                            "(and qualify every name)"))
    return out


CHECK = Check(
    id="definer-search-path",
    title="SECURITY DEFINER functions pin a safe search_path",
    category="functions",
    level="error",
    description="proconfig of every SECURITY DEFINER function in user schemas has a "
                "search_path that names pg_temp last and no schema others may create in "
                "(public, $user). Needs: catalog read.",
    remediation=f"ALTER FUNCTION ... SET search_path = {SAFE_PATH}",
    run=_run,
)
