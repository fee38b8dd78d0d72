"""No permissive policy lets a write through unconditionally (USING / WITH CHECK always true)."""

from __future__ import annotations

import psycopg
from psycopg import sql

from chatsec.audit.check import Check
from chatsec.audit.context import APP_ROLE, AuditContext
from chatsec.audit.finding import Finding, Level
from chatsec.policy.model import TableSpec

_NO_TABLE = TableSpec("", False, False, {}, {})

# polcmd: * all, a insert, w update, d delete. INSERT has only WITH CHECK, DELETE only
# USING; UPDATE and ALL use USING for WITH CHECK when the latter is absent.
_POLICIES = """
SELECT p.polname, n.nspname || '.' || c.relname, p.polcmd,
       pg_catalog.pg_get_expr(p.polqual, p.polrelid),
       pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid),
       ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r) END
               FROM unnest(p.polroles) r ORDER BY 1),
       EXISTS (SELECT 1 FROM unnest(p.polroles) r
                WHERE r = 0 OR pg_catalog.pg_has_role(%s, r, 'MEMBER'))
  FROM pg_catalog.pg_policy p
  JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE p.polpermissive AND p.polcmd IN ('*', 'a', 'w', 'd')
   AND n.nspname NOT IN ('pg_catalog', 'information_schema')
 ORDER BY 2, 1
"""
_COMMAND = {"*": "ALL", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}


def _always_true(ctx: AuditContext, expr: str) -> bool:
    """True when `expr` is constant and true: it refers to no column and evaluates to true."""
    if expr.strip().lower() in {"true", "(true)"}:
        return True
    try:
        # A savepoint: an expression that names a column (or a function the auditor may
        # not call) fails, which means it is not a constant.
        with ctx.conn.transaction():
            ctx.conn.execute("SET LOCAL statement_timeout = '1s'")
            row = ctx.conn.execute(
                sql.SQL("SELECT ({})::boolean").format(sql.SQL(expr))
            ).fetchone()
    except psycopg.Error:
        return False
    return row is not None and row[0] is True


def _run(ctx: AuditContext) -> list[Finding]:
    out = []
    for name, table, cmd, using, check, roles, reaches_app in ctx.conn.execute(
        _POLICIES, (APP_ROLE,)
    ).fetchall():
        command = _COMMAND[str(cmd)]
        exprs = {"USING": using, "WITH CHECK": check if check is not None else (
            None if command == "DELETE" else using)}
        if command == "INSERT":
            exprs.pop("USING")
        if command == "DELETE":
            exprs.pop("WITH CHECK")
        bad = [k for k, e in exprs.items() if e is not None and _always_true(ctx, str(e))]
        if not bad:
            continue
        to = ", ".join(str(r) for r in roles)  # type: ignore[attr-defined]
        declared = str(name) in ctx.declared.tables.get(str(table), _NO_TABLE).policies
        # For the application (or PUBLIC) it is a hole in the isolation. For a maintenance
        # role such as chat_key_rotator it can be the design: reviewed (declared) is info,
        # undeclared is a warning.
        level: Level = "error" if reaches_app else ("info" if declared else "warning")
        out.append(CHECK.finding(
            f"{name} on {table}",
            f"permissive FOR {command} TO {to} with {' and '.join(bad)} always true: "
            f"{to} may {command.lower()} every row"
            + ("" if reaches_app else " (not the application's role"
               + ("; declared in policies/)" if declared else ")")),
            level=level,
            remediation=f"DROP POLICY {name} ON {table}, or restrict its expression",
        ))
    return out


CHECK = Check(
    id="permissive-true-write",
    title="No always-true permissive write policy",
    category="declared-state",
    level="error",
    description="Permissive INSERT/UPDATE/DELETE/ALL policies whose USING or WITH CHECK is a "
                "constant true, on every table: an error when it applies to PUBLIC or a role "
                "app_user belongs to, a warning for other roles (info when declared in "
                "policies/). Needs: catalog read.",
    remediation="drop the policy or give it a real condition",
    run=_run,
)
