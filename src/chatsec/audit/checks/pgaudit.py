"""Change logging: pgaudit loaded and logging at least DDL and role changes in this database."""

from __future__ import annotations

from chatsec.audit.check import Check, Skip
from chatsec.audit.checks._settings import Context, Layers, Value
from chatsec.audit.checks.logging_leaks_keys import pgaudit_classes
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

REQUIRED = frozenset({"ddl", "role"})
_AVAILABLE = (
    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'pgaudit')"
)
# Logins that may connect here: each must have its DDL and role changes logged.
_LOGINS = """
SELECT r.rolname FROM pg_catalog.pg_roles r
 WHERE r.rolcanlogin
   AND pg_catalog.has_database_privilege(r.oid, pg_catalog.current_database(), 'CONNECT')
 ORDER BY 1
"""
_FIX = "pgaudit.log = 'ddl, role' in postgresql.conf (or ALTER SYSTEM), then reload"


def _missing(value: Value) -> set[str]:
    return set(REQUIRED - pgaudit_classes(value.value))


def _shown(value: Value) -> str:
    shown = "(default: none)" if value.value is None else repr(value.value)
    return f"pgaudit.log = {shown} ({value.layer.where})"


def _uncovered(ctx: AuditContext, contexts: list[Context]) -> list[str]:
    """Logins that can connect here whose own role defaults do not log DDL and role changes."""
    by_role = {c.role: c for c in contexts if c.role is not None}
    out = []
    for (login,) in ctx.conn.execute(_LOGINS).fetchall():
        context = by_role.get(str(login))
        if context is None or _missing(context.get("pgaudit.log")):
            out.append(str(login))
    return out


def _run(ctx: AuditContext) -> list[Finding]:
    if not ctx.scalar(_AVAILABLE):
        raise Skip(
            "pgaudit is not installed on this server (pg_available_extensions has no "
            "pgaudit; Debian: apt-get install postgresql-15-pgaudit)"
        )
    preload = ctx.settings.get("shared_preload_libraries")
    if preload is None:
        raise Skip("needs pg_read_all_settings to read shared_preload_libraries")
    if "pgaudit" not in {p.strip().strip('"') for p in preload.split(",")}:
        return [
            CHECK.finding(
                "shared_preload_libraries",
                f"pgaudit is installed but not loaded "
                f"(shared_preload_libraries = {preload!r}): DDL and role changes "
                "are not logged",
                remediation="add pgaudit to shared_preload_libraries and restart; " + _FIX,
            )
        ]
    contexts = Layers.read(ctx).contexts()
    out = []
    database_wide = contexts[0].get("pgaudit.log")
    missing = _missing(database_wide)
    if missing:
        # Role defaults may still log everything: only logins left out are a gap.
        uncovered = _uncovered(ctx, contexts)
        if uncovered:
            out.append(
                CHECK.finding(
                    f"setting pgaudit.log ({database_wide.layer.where})",
                    f"{_shown(database_wide)} does not log {', '.join(sorted(missing))} for "
                    f"sessions of {', '.join(uncovered)}: schema and privilege changes leave no "
                    "trace",
                    remediation=_FIX,
                )
            )
    for context in contexts[1:]:
        value = context.get("pgaudit.log")
        if value.layer.is_role and value.layer.login and _missing(value) and not missing:
            out.append(
                CHECK.finding(
                    f"setting pgaudit.log ({value.layer.where})",
                    f"{_shown(value)} turns off {', '.join(sorted(_missing(value)))} logging for "
                    f"{context.role}'s sessions",
                    remediation=f"{value.layer.alter} RESET pgaudit.log",
                )
            )
    return out


CHECK = Check(
    id="pgaudit",
    title="DDL and role changes are logged (pgaudit)",
    category="server",
    level="warning",
    description="pgaudit in shared_preload_libraries and pgaudit.log covering at least ddl and "
    "role for this database, at server, database or role level (every login that "
    "may connect is covered; a role default that turns them off is named). Skipped "
    "where pgaudit is not installed (pg_available_extensions). CREATE EXTENSION is "
    "not required: pgaudit logs DDL and role statements without it. Needs: "
    "pg_read_all_settings.",
    remediation="shared_preload_libraries = '..., pgaudit'; " + _FIX,
    run=_run,
)
