"""SQL text for declared objects: what generated revisions hold, and what `chatsec plan` shows."""

from __future__ import annotations

from psycopg import sql

from chatsec.policy.model import FunctionSpec, PolicySpec, RoleSpec, TableGrant

_ATTR_SQL = {
    "login": ("LOGIN", "NOLOGIN"),
    "superuser": ("SUPERUSER", "NOSUPERUSER"),
    "createdb": ("CREATEDB", "NOCREATEDB"),
    "createrole": ("CREATEROLE", "NOCREATEROLE"),
    "bypassrls": ("BYPASSRLS", "NOBYPASSRLS"),
    "replication": ("REPLICATION", "NOREPLICATION"),
    "inherit": ("INHERIT", "NOINHERIT"),
}


def ident(name: str) -> str:
    """A role or object name quoted only where PostgreSQL needs it; PUBLIC stays a keyword."""
    if name == "PUBLIC":
        return name
    parts = name.split(".")
    return ".".join(sql.Identifier(p).as_string(None) if not _plain(p) else p for p in parts)


def _plain(name: str) -> bool:
    return name.isidentifier() and name == name.lower() and name.isascii()


def literal(value: str) -> str:
    return sql.Literal(value).as_string(None)


def role_attributes(attrs: dict[str, bool], only: set[str] | None = None) -> str:
    keys = [k for k in _ATTR_SQL if only is None or k in only]
    return " ".join(_ATTR_SQL[k][0 if attrs[k] else 1] for k in keys)


def create_role(role: RoleSpec) -> str:
    # Idempotent: roles are cluster-wide and another database may have created it.
    return (
        "DO $$\nBEGIN\n"
        f"  IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = {literal(role.name)}) THEN\n"
        f"    CREATE ROLE {ident(role.name)} {role_attributes(role.attributes)};\n"
        "  END IF;\nEND\n$$"
    )


def alter_role(name: str, attrs: dict[str, bool], changed: set[str]) -> str:
    return f"ALTER ROLE {ident(name)} {role_attributes(attrs, changed)}"


def grant_privileges(privs: frozenset[str], on: str, grantee: str, revoke: bool = False) -> str:
    listed = ", ".join(sorted(privs))
    if revoke:
        return f"REVOKE {listed} ON {on} FROM {ident(grantee)}"
    return f"GRANT {listed} ON {on} TO {ident(grantee)}"


def alter_owner(kind: str, name: str, owner: str) -> str:
    """ALTER FUNCTION|TABLE name OWNER TO owner; a function is named by its identity."""
    target = name if kind == "FUNCTION" else ident(name)
    return f"ALTER {kind} {target} OWNER TO {ident(owner)}"


def on_current_database(statement: str) -> str:
    """A GRANT/REVOKE ... ON DATABASE statement for whichever database it runs in.

    The chat database's name differs per environment, so it is read at run time.
    """
    head, _, tail = statement.partition(" ON DATABASE ")
    return (
        "DO $$\nBEGIN\n  EXECUTE pg_catalog.format("
        f"{literal(head + ' ON DATABASE %I ' + tail)}, pg_catalog.current_database());\nEND\n$$"
    )


def table_grant_statements(
    table: str, grantee: str, grant: TableGrant, revoke: bool = False
) -> list[str]:
    out = []
    if grant.table:
        out.append(grant_privileges(grant.table, f"TABLE {ident(table)}", grantee, revoke))
    for priv, cols in sorted(grant.columns.items()):
        if cols:
            collist = ", ".join(ident(c) for c in sorted(cols))
            verb, prep = ("REVOKE", "FROM") if revoke else ("GRANT", "TO")
            out.append(f"{verb} {priv} ({collist}) ON TABLE {ident(table)} {prep} {ident(grantee)}")
    return out


def create_policy(policy: PolicySpec) -> str:
    text = (
        f"CREATE POLICY {ident(policy.name)} ON {ident(policy.table)}\n"
        f"  AS {'PERMISSIVE' if policy.permissive else 'RESTRICTIVE'}\n"
        f"  FOR {policy.command}\n"
        f"  TO {', '.join(ident(r) for r in sorted(policy.roles))}"
    )
    if policy.using is not None:
        text += f"\n  USING ({policy.using})"
    if policy.with_check is not None:
        text += f"\n  WITH CHECK ({policy.with_check})"
    return text


def drop_policy(policy: PolicySpec) -> str:
    return f"DROP POLICY {ident(policy.name)} ON {ident(policy.table)}"


def rls_statement(table: str, enabled: bool | None = None, forced: bool | None = None) -> str:
    if enabled is not None:
        return f"ALTER TABLE {ident(table)} {'ENABLE' if enabled else 'DISABLE'} ROW LEVEL SECURITY"
    return f"ALTER TABLE {ident(table)} {'FORCE' if forced else 'NO FORCE'} ROW LEVEL SECURITY"


def create_function(fn: FunctionSpec, replace: bool = False) -> str:
    head = "CREATE OR REPLACE FUNCTION" if replace else "CREATE FUNCTION"
    lines = [
        f"{head} {fn.signature}",
        f"  RETURNS {fn.returns}",
        f"  LANGUAGE {fn.language}",
        f"  {fn.volatility.upper()}",
    ]
    lines.append("  SECURITY DEFINER" if fn.security_definer else "  SECURITY INVOKER")
    if fn.rows is not None:
        lines.append(f"  ROWS {fn.rows}")
    if fn.search_path is not None:
        lines.append(
            f"  SET search_path = {literal(fn.search_path) if fn.search_path == '' else fn.search_path}"
        )
    body = fn.body if fn.body.startswith("\n") else "\n" + fn.body
    if not body.endswith("\n"):
        body += "\n"
    tag = "$fn$"
    lines.append(f"AS {tag}{body}{tag}")
    return "\n".join(lines)


def drop_function(fn: FunctionSpec) -> str:
    return f"DROP FUNCTION {fn.identity}"
