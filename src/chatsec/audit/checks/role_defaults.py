"""Role and database defaults that change how the application's sessions behave."""

from __future__ import annotations

from chatsec.app.pool import PINNED_SETTINGS
from chatsec.audit.check import Check
from chatsec.audit.checks._roles import RoleGraph
from chatsec.audit.checks._settings import Layer, Layers
from chatsec.audit.checks.key_in_database import HEX_KEY, KEY_SETTINGS
from chatsec.audit.checks.logging_leaks_keys import LOGGING_SETTINGS
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

_PINNED = {name.lower() for name in PINNED_SETTINGS}


def _judged_elsewhere(name: str, value: str) -> bool:
    """logging-leaks-keys and key-in-database report these: one breakage, one check."""
    return name in LOGGING_SETTINGS or name in KEY_SETTINGS or bool(HEX_KEY.search(value))


def _why(layer: Layer, name: str, app_roles: set[str]) -> str | None:
    if name in _PINNED:
        return (
            "chatsec.app pins it for its own sessions (a startup option outranks this "
            "default), but every other session of "
            + (f"{layer.role}" if layer.is_role else "this database")
            + " gets it, and it is what the policies, the encryption trigger or the pool "
            "rely on"
        )
    if layer.role in app_roles:
        return (
            "a default on an application login (which may ALTER ROLE CURRENT_USER SET "
            "anything user-settable): it changes every later session of that login that "
            "chatsec.app does not pin, planner and resource settings included"
        )
    return None


def _run(ctx: AuditContext) -> list[Finding]:
    app_roles = RoleGraph.read(ctx).app_roles()
    out = []
    for layer in Layers.read(ctx).defaults():
        for name, value in sorted(layer.values.items()):
            if _judged_elsewhere(name, value):
                continue
            why = _why(layer, name, app_roles)
            if why:
                out.append(
                    CHECK.finding(
                        f"setting {name} ({layer.where})",
                        f"{name} = {value!r} is a default of {layer.where}: {why}",
                        remediation=f"{layer.alter} RESET {name}",
                    )
                )
    return out


CHECK = Check(
    id="role-defaults",
    title="No role or database default under the application's settings",
    category="server",
    level="warning",
    description="pg_db_role_setting for this database and for all databases: a database, "
    "ALTER ROLE ALL or role default of any setting chatsec.app pins "
    "(chatsec.app.pool.PINNED_SETTINGS: search_path, row_security, timeouts, "
    "formats, ...), and any role default on app_user or one of its logins (what the "
    "login may set for itself). Settings logging-leaks-keys or key-in-database judge "
    "are left to them. Needs: catalog read.",
    remediation="ALTER ROLE ... RESET ... / ALTER DATABASE ... RESET ...",
    run=_run,
)
