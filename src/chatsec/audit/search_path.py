"""Functions whose search_path lets a caller shadow the names they use (two checks share it).

Without pg_temp named in the path PostgreSQL searches the caller's temporary schema
*first* for relations and types, so `search_path = ''` (or no fixed path at all) lets a
caller's temporary domain or view run inside the function; a path naming a schema others
may create in (public, $user) lets them plant objects there.
"""

from __future__ import annotations

from dataclasses import dataclass

from chatsec.audit.context import AuditContext
from chatsec.policy.load import checked_search_path

SAFE_PATH = "pg_catalog, pg_temp"

# Every function outside the system schemas that no extension installed (extension
# members are the extension's business, and most are C code).
_FUNCTIONS = """
SELECT p.oid::pg_catalog.regprocedure::text, n.nspname, p.proconfig, p.prosecdef,
       pg_catalog.pg_get_userbyid(p.proowner)
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND n.nspname NOT LIKE 'pg_toast%%' AND n.nspname NOT LIKE 'pg_temp%%'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
 ORDER BY 1
"""


@dataclass(frozen=True)
class FunctionPath:
    identity: str
    schema: str
    search_path: str | None  # None: no fixed search_path
    definer: bool
    owner: str

    @property
    def unsafe(self) -> bool:
        return self.search_path is None or checked_search_path(self.search_path) is None

    def problem(self) -> str:
        runs = f"SECURITY DEFINER (runs as {self.owner})" if self.definer else "runs as its caller"
        if self.search_path is None:
            return (
                f"{runs} without a fixed search_path: the caller's search_path decides which "
                "tables, types and functions it uses"
            )
        return (
            f"{runs} with search_path {self.search_path or repr('')}: pg_temp is not named "
            "last (then the caller's temporary schema is searched first for types and "
            "relations) or a schema others may create in is on it, so a caller can make "
            "its own code run inside it"
        )

    def remediation(self) -> str:
        return (
            f"ALTER FUNCTION {self.identity} SET search_path = {SAFE_PATH} (and qualify every name)"
        )


def _search_path(config: object) -> str | None:
    for item in config or []:  # type: ignore[attr-defined]
        key, _, value = str(item).partition("=")
        if key == "search_path":
            return value
    return None


def function_paths(ctx: AuditContext) -> list[FunctionPath]:
    return [
        FunctionPath(str(ident), str(schema), _search_path(config), bool(definer), str(owner))
        for ident, schema, config, definer, owner in ctx.conn.execute(_FUNCTIONS).fetchall()
    ]


def unsafe_functions(ctx: AuditContext) -> set[str]:
    """Functions definer-search-path or function-search-path reports."""
    declared = set(ctx.declared.schemas)
    return {
        f.identity for f in function_paths(ctx) if f.unsafe and (f.definer or f.schema in declared)
    }
