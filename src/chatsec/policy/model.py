"""The security state as data: the same shapes for what policies/ declares and what the catalog holds."""

from __future__ import annotations

from dataclasses import dataclass, field

PUBLIC = "PUBLIC"
# The role that owns the chat schemas and tables; objects owned by another role say so.
OWNER_ROLE = "chat_owner"
# PostgreSQL's row estimate for a set-returning function declared without ROWS.
DEFAULT_FUNCTION_ROWS = 1000
ROLE_ATTRIBUTES = (
    "login",
    "superuser",
    "createdb",
    "createrole",
    "bypassrls",
    "replication",
    "inherit",
)
COMMANDS = ("ALL", "SELECT", "INSERT", "UPDATE", "DELETE")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
COLUMN_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "REFERENCES")
DATABASE_PRIVILEGES = ("CONNECT", "TEMPORARY", "CREATE")
# object type -> (pg_default_acl.defaclobjtype, acldefault() code)
DEFAULT_ACL_TYPES = {"tables": ("r", "r"), "sequences": ("S", "s"), "functions": ("f", "f")}

# role name -> privileges; PUBLIC is spelled "PUBLIC".
Grants = dict[str, frozenset[str]]


@dataclass(frozen=True)
class RoleSpec:
    name: str
    attributes: dict[str, bool]
    member_of: frozenset[str]


@dataclass(frozen=True)
class TableGrant:
    """One grantee's privileges on one table: whole-table, and per column."""

    table: frozenset[str] = frozenset()
    columns: dict[str, frozenset[str]] = field(default_factory=dict)  # privilege -> columns

    def is_empty(self) -> bool:
        return not self.table and not any(self.columns.values())


@dataclass(frozen=True)
class PolicySpec:
    name: str
    table: str
    command: str
    roles: frozenset[str]
    permissive: bool
    using: str | None
    with_check: str | None


@dataclass(frozen=True)
class TriggerSpec:
    name: str
    table: str  # schema-qualified
    definition: str  # as pg_get_triggerdef() prints it with search_path pg_catalog
    enabled: bool = True


@dataclass(frozen=True)
class ObjectSpec:
    """A live object outside the declared tables and functions (or a declared exception)."""

    name: str  # schema-qualified; for rules "rule ON table", for event triggers the name
    kind: str  # table, view, materialized view, sequence, foreign table, function,
    # procedure, aggregate, type, domain, rule, event trigger
    owner: str = ""
    definition: str = ""


@dataclass(frozen=True)
class TableSpec:
    name: str  # schema-qualified
    rls_enabled: bool
    rls_forced: bool
    grants: dict[str, TableGrant]
    policies: dict[str, PolicySpec]
    owner: str = OWNER_ROLE
    triggers: dict[str, TriggerSpec] = field(default_factory=dict)


@dataclass(frozen=True)
class FunctionSpec:
    key: str  # short name used in messages
    signature: str  # schema.name(arg type, ...) as written in policies/
    identity: str  # regprocedure text as PostgreSQL prints it, e.g. chat.my_thread_counts(uuid[])
    returns: str
    language: str
    volatility: str
    security_definer: bool
    search_path: str | None  # normalized: entries joined by ", "
    body: str
    execute: frozenset[str]
    owner: str = OWNER_ROLE
    # For live functions: pg_get_functiondef(), to restore the exact old definition.
    definition: str | None = None
    # The planner's row estimate for a set-returning function (ROWS); None: not one.
    rows: int | None = None


@dataclass(frozen=True)
class SchemaSpec:
    name: str
    owner: str
    grants: Grants


@dataclass
class SecurityState:
    """Everything chatsec compares: roles, the database, schemas, tables, functions."""

    roles: dict[str, RoleSpec] = field(default_factory=dict)
    schemas: dict[str, SchemaSpec] = field(default_factory=dict)
    tables: dict[str, TableSpec] = field(default_factory=dict)
    functions: dict[str, FunctionSpec] = field(default_factory=dict)  # by identity
    # (owner role, object type) -> grants to others than the owner
    default_privileges: dict[tuple[str, str], Grants] = field(default_factory=dict)
    sequences: dict[str, Grants] = field(default_factory=dict)
    # Privileges on the chat database itself (not its owner's); None: not declared.
    database: Grants | None = None
    # Declared: the deployment's own objects besides tables and functions (name -> kind).
    # Live: every object outside the declared tables and functions (`chatsec plan` scope).
    other_objects: dict[str, ObjectSpec] = field(default_factory=dict)


def normalize_search_path(value: str) -> str:
    """'pg_catalog,pg_temp' and 'pg_catalog, pg_temp' alike, as PostgreSQL prints proconfig."""
    return ", ".join(part.strip() for part in value.split(",") if part.strip())
