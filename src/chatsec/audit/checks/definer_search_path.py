"""Every SECURITY DEFINER function pins its search_path, so a caller cannot shadow its names."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

# All user schemas, not only chat: a definer function anywhere runs with its owner's rights.
DEFINERS = """
SELECT p.oid::pg_catalog.regprocedure::text, p.proconfig, pg_catalog.pg_get_userbyid(p.proowner)
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE p.prosecdef AND n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%%'
 ORDER BY 1
"""
# Schemas any role may create objects in by default, or the caller's own schema.
_UNSAFE = {"public", '"$user"', "$user"}


def _search_path(config: object) -> str | None:
    for item in config or []:  # type: ignore[attr-defined]
        key, _, value = str(item).partition("=")
        if key == "search_path":
            return value
    return None


def definers_without_search_path(ctx: AuditContext) -> set[str]:
    return {str(ident) for ident, config, _ in ctx.conn.execute(DEFINERS).fetchall()
            if _search_path(config) is None}


def _run(ctx: AuditContext) -> list[Finding]:
    out = []
    for ident, config, owner in ctx.conn.execute(DEFINERS).fetchall():
        path = _search_path(config)
        if path is None:
            out.append(CHECK.finding(
                str(ident), f"SECURITY DEFINER (runs as {owner}) without a fixed search_path: "
                "the caller's search_path decides which tables and functions it uses",
                remediation=f"ALTER FUNCTION {ident} SET search_path = ''"))
            continue
        entries = {e.strip() for e in path.split(",")}
        unsafe = sorted(entries & _UNSAFE)
        if unsafe:
            out.append(CHECK.finding(
                str(ident), f"search_path {path} includes {', '.join(unsafe)}, where others "
                "may create objects that shadow the function's names",
                level="warning",
                remediation=f"ALTER FUNCTION {ident} SET search_path = '' (qualify every name)"))
    return out


CHECK = Check(
    id="definer-search-path",
    title="SECURITY DEFINER functions pin search_path",
    category="functions",
    level="error",
    description="proconfig of every SECURITY DEFINER function in user schemas has search_path; "
                "a search_path with public or $user is a warning. Needs: catalog read.",
    remediation="ALTER FUNCTION ... SET search_path = ''",
    run=_run,
)
