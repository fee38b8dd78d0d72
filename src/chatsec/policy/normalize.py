"""Declared policy expressions as PostgreSQL itself prints them.

Each declared policy is created on a temporary copy of its table inside the
caller's transaction (which the caller rolls back), then read back with
pg_get_expr(): formatting, parentheses and casts never show up as differences.
Temporary tables need only the TEMPORARY privilege, so the auditor can do this too.
"""

from __future__ import annotations

import psycopg
from psycopg import sql

from chatsec.errors import ChatsecError
from chatsec.policy.model import PolicySpec, SecurityState

Conn = psycopg.Connection[tuple[object, ...]]

_NOT_DEPLOYED = (
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.InvalidSchemaName,
)


def _fully_deployed(conn: Conn, declared: SecurityState) -> bool:
    """Whether every declared table and function exists in the database."""
    row = conn.execute(
        "SELECT bool_and(pg_catalog.to_regclass(t) IS NOT NULL) "
        "   AND (SELECT bool_and(pg_catalog.to_regprocedure(f) IS NOT NULL) "
        "          FROM pg_catalog.unnest(%s::pg_catalog.text[]) f) "
        "  FROM pg_catalog.unnest(%s::pg_catalog.text[]) t",
        (sorted(declared.functions), sorted(declared.tables)),
    ).fetchone()
    return bool(row and row[0])


def normalize_policies(conn: Conn, declared: SecurityState) -> dict[str, dict[str, PolicySpec]]:
    """table -> policy name -> the declared policy with normalized USING / WITH CHECK."""
    out: dict[str, dict[str, PolicySpec]] = {}
    for table in sorted(declared.tables):
        spec = declared.tables[table]
        if not spec.policies:
            out[table] = {}
            continue
        schema, _, name = table.partition(".")
        columns = conn.execute(
            """
            SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod)
              FROM pg_catalog.pg_attribute a
              JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
              JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
             WHERE ns.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
             ORDER BY a.attnum
            """,
            (schema, name),
        ).fetchall()
        if not columns:
            # Not deployed (yet): the comparison reports the table missing, which is drift.
            out[table] = {}
            continue
        # Same name as the real table: deparsed column references are qualified by it.
        temp = sql.Identifier(name)
        coldefs = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(str(col)), sql.SQL(str(typ)))
            for col, typ in columns
        )
        conn.execute(sql.SQL("CREATE TEMPORARY TABLE {} ({}) ON COMMIT DROP").format(temp, coldefs))
        for policy in spec.policies.values():
            stmt = sql.SQL("CREATE POLICY {} ON pg_temp.{} FOR {} TO PUBLIC").format(
                sql.Identifier(policy.name), temp, sql.SQL(policy.command)
            )
            if policy.using is not None:
                stmt += sql.SQL(" USING ({})").format(sql.SQL(policy.using))
            if policy.with_check is not None:
                stmt += sql.SQL(" WITH CHECK ({})").format(sql.SQL(policy.with_check))
            try:
                with conn.transaction():
                    conn.execute(stmt)
            except _NOT_DEPLOYED as exc:
                # It names a function, table or column this database does not have. In a
                # database where something declared is missing (not deployed yet, or only
                # partly), that is drift: compared as declared, it differs from whatever is
                # live. Where everything declared exists, the policy itself is wrong.
                if _fully_deployed(conn, declared):
                    reason = (exc.diag.message_primary or str(exc)).strip()
                    raise ChatsecError(
                        f"declared policy {policy.name} on {table} does not compile: {reason}"
                    ) from None
                continue
            except psycopg.Error as exc:
                reason = (exc.diag.message_primary or str(exc)).strip()
                raise ChatsecError(
                    f"declared policy {policy.name} on {table} does not compile: {reason}"
                ) from None
        rows = conn.execute(
            """
            SELECT p.polname, pg_catalog.pg_get_expr(p.polqual, p.polrelid),
                   pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
              FROM pg_catalog.pg_policy p
             WHERE p.polrelid = pg_catalog.to_regclass(%s)
            """,
            (f"pg_temp.{name}",),
        ).fetchall()
        # Policies that did not compile here keep their declared text.
        normalized = dict(spec.policies)
        for pname, using, check in rows:
            base = spec.policies[str(pname)]
            normalized[str(pname)] = PolicySpec(
                base.name,
                base.table,
                base.command,
                base.roles,
                base.permissive,
                None if using is None else str(using),
                None if check is None else str(check),
            )
        out[table] = normalized
    return out
