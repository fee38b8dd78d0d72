"""Settings as sessions of the audited database get them: server, database and role defaults.

PostgreSQL applies, lowest first: the server (postgresql.conf, ALTER SYSTEM, command line),
ALTER ROLE ALL SET, ALTER DATABASE SET, ALTER ROLE SET, ALTER ROLE ... IN DATABASE SET.
Role defaults apply to the role a session logs in as, never to members of that role.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from chatsec.audit.context import AuditContext

# pg_settings sources that are the server's own value (anything else is a default of the
# database, a role or the audit session itself, laid over the server's).
_SERVER_SOURCES = {
    "default",
    "configuration file",
    "command line",
    "environment variable",
    "override",
}
# What hides the server's value from the audit session without applying to other sessions.
_AUDITOR_SOURCES = {"user", "database user", "session", "client", "interactive"}
_SETTINGS = "SELECT lower(name), setting, source FROM pg_catalog.pg_settings"
_DEFAULTS = """
SELECT s.setdatabase <> 0, r.rolname, coalesce(r.rolcanlogin, false), s.setconfig
  FROM pg_catalog.pg_db_role_setting s
  LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
 WHERE s.setdatabase IN (0, (SELECT oid FROM pg_catalog.pg_database
                              WHERE datname = pg_catalog.current_database()))
 ORDER BY 2 NULLS FIRST, 1
"""
_TRUE = {"on", "true", "yes", "1", "t", "y", "tr", "tru", "ye"}
_NUMBER = re.compile(r"^\s*(-?[0-9]*\.?[0-9]+(?:e[-+]?[0-9]+)?)", re.IGNORECASE)


@dataclass(frozen=True)
class Layer:
    """One place settings are set: the server, every role, the database or one role."""

    where: str  # for messages: "server", "database chat", "role x in database chat", ...
    alter: str  # the statement that changes it, for remediations
    role: str | None = None
    login: bool = True  # a role layer of a NOLOGIN role never applies to a session
    values: dict[str, str] = field(default_factory=dict)  # lower-case name -> value

    @property
    def is_role(self) -> bool:
        return self.role is not None


@dataclass(frozen=True)
class Value:
    """A setting as one kind of session gets it, and where it came from."""

    name: str
    value: str | None  # None: unset, or hidden from the audit login (see `known`)
    layer: Layer
    known: bool = True


@dataclass(frozen=True)
class Context:
    """Sessions of one login (or, with `role` None, of any login without role defaults)."""

    role: str | None
    login: bool
    layers: tuple[Layer, ...]  # highest precedence first; the server last
    hidden: frozenset[str]

    def get(self, name: str) -> Value:
        key = name.lower()
        for layer in self.layers:
            if key in layer.values:
                return Value(name, layer.values[key], layer)
        server = self.layers[-1]
        return Value(name, None, server, known=key not in self.hidden)


@dataclass
class Layers:
    server: Layer
    shared: list[Layer]  # ALTER DATABASE, then ALTER ROLE ALL: apply to every session
    roles: dict[str, list[Layer]]  # role -> its layers, the database-specific one first
    hidden: frozenset[str]  # server values the audit login's own defaults hide from it

    @classmethod
    def read(cls, ctx: AuditContext) -> Layers:
        server = Layer("server", "ALTER SYSTEM")
        hidden = set()
        for name, setting, source in ctx.conn.execute(_SETTINGS).fetchall():
            if str(source) in _SERVER_SOURCES:
                server.values[str(name)] = str(setting)
            elif str(source) in _AUDITOR_SOURCES:
                hidden.add(str(name))
        database = str(ctx.conn.info.dbname)
        shared: list[Layer] = []
        roles: dict[str, list[Layer]] = {}
        for in_database, role, login, config in ctx.conn.execute(_DEFAULTS).fetchall():
            values = _parse(config)
            if role is None:
                where, alter = (
                    (f"database {database}", f'ALTER DATABASE "{database}"')
                    if in_database
                    else ("every role", "ALTER ROLE ALL")
                )
                shared.insert(0 if in_database else len(shared), Layer(where, alter, values=values))
                continue
            where, alter = f"role {role}", f'ALTER ROLE "{role}"'
            if in_database:
                where += f" in database {database}"
                alter += f' IN DATABASE "{database}"'
            layer = Layer(where, alter, str(role), bool(login), values)
            roles.setdefault(str(role), []).insert(0 if in_database else 1, layer)
        # A value a database or ALTER ROLE ALL default replaces is never used in this
        # database: its being hidden from the audit login does not matter.
        covered = {n for layer in shared for n in layer.values}
        return cls(server, shared, roles, frozenset(hidden - covered))

    def contexts(self) -> list[Context]:
        """Any login without role defaults first, then each role that has some."""
        base = (*self.shared, self.server)
        out = [Context(None, True, base, self.hidden)]
        for role, layers in sorted(self.roles.items()):
            out.append(Context(role, layers[0].login, (*layers, *base), self.hidden))
        return out

    def defaults(self) -> list[Layer]:
        """Every database and role layer (not the server)."""
        return [*self.shared, *(layer for ls in self.roles.values() for layer in ls)]


def _parse(config: object) -> dict[str, str]:
    out = {}
    for entry in config if isinstance(config, list) else []:
        name, _, value = str(entry).partition("=")
        out[name.lower()] = value
    return out


def is_on(value: str | None) -> bool:
    return value is not None and value.strip().lower() in _TRUE


def number(value: str | None, default: float) -> float:
    """The leading number of a setting ('500ms' -> 500); `default` when there is none."""
    match = _NUMBER.match(value or "")
    return float(match.group(1)) if match else default
