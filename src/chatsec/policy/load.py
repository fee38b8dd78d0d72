"""Reading policies/ (TOML) into a SecurityState, with one clear error per malformed file."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from chatsec.errors import ChatsecError
from chatsec.paths import policies_dir
from chatsec.policy.model import (
    COLUMN_PRIVILEGES,
    COMMANDS,
    DATABASE_PRIVILEGES,
    DEFAULT_ACL_TYPES,
    DEFAULT_FUNCTION_ROWS,
    OWNER_ROLE,
    ROLE_ATTRIBUTES,
    TABLE_PRIVILEGES,
    FunctionSpec,
    ObjectSpec,
    PolicySpec,
    RoleSpec,
    SchemaSpec,
    SecurityState,
    TableGrant,
    TableSpec,
    TriggerSpec,
    normalize_search_path,
)

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
_QUALIFIED = re.compile(r"^[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*$")
_SIGNATURE = re.compile(r"^([a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*)\((.*)\)$")


class _File:
    """Typed access to one parsed TOML file, errors naming the file and key."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ChatsecError(f"malformed policy file {path}: {exc}") from None
        except OSError as exc:
            raise ChatsecError(f"cannot read policy file {path}: {exc.strerror}") from None

    def fail(self, where: str, what: str) -> ChatsecError:
        return ChatsecError(f"policy file {self.path}: {where}: {what}")

    def table(self, obj: Any, where: str) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise self.fail(where, "expected a table")
        return obj

    def names(self, obj: Any, where: str, allowed: tuple[str, ...] | None = None) -> frozenset[str]:
        if not isinstance(obj, list) or not all(isinstance(x, str) for x in obj):
            raise self.fail(where, "expected a list of strings")
        out = frozenset(x.upper() if allowed else x for x in obj)
        if allowed:
            bad = sorted(out - set(allowed))
            if bad:
                raise self.fail(where, f"unknown {', '.join(bad)} (allowed: {', '.join(allowed)})")
        return out

    def string(self, obj: Any, where: str) -> str:
        if not isinstance(obj, str):
            raise self.fail(where, "expected a string")
        return obj

    def boolean(self, obj: Any, where: str) -> bool:
        if not isinstance(obj, bool):
            raise self.fail(where, "expected true or false")
        return obj

    def check_keys(self, obj: dict[str, Any], where: str, allowed: set[str]) -> None:
        unknown = sorted(set(obj) - allowed)
        if unknown:
            raise self.fail(where, f"unknown key(s) {', '.join(unknown)}")


def load_policies(directory: Path | None = None) -> SecurityState:
    """The declared state from `directory` (default: the policies/ shipped with chatsec)."""
    root = directory or policies_dir()
    if not root.is_dir():
        raise ChatsecError(f"policy directory {root} does not exist")
    state = SecurityState()
    roles = root / "roles.toml"
    schemas = root / "schemas.toml"
    functions = root / "functions.toml"
    for required in (roles, schemas, functions):
        if not required.is_file():
            raise ChatsecError(f"policy directory {root} has no {required.name}")
    _load_roles(_File(roles), state)
    _load_schemas(_File(schemas), state)
    _load_functions(_File(functions), state)
    table_files = sorted((root / "tables").glob("*.toml"))
    if not table_files:
        raise ChatsecError(f"policy directory {root} has no tables/*.toml")
    for path in table_files:
        _load_table(_File(path), state)
    _check_references(state, root)
    return state


def _load_roles(f: _File, state: SecurityState) -> None:
    roles = f.table(f.data.get("roles"), "roles")
    for name, raw in roles.items():
        where = f"roles.{name}"
        if not _NAME.match(name):
            raise f.fail(where, "role names are lower-case identifiers")
        spec = f.table(raw, where)
        f.check_keys(spec, where, {*ROLE_ATTRIBUTES, "member_of", "comment"})
        attrs = {a: False for a in ROLE_ATTRIBUTES}
        attrs["inherit"] = True
        for attr in ROLE_ATTRIBUTES:
            if attr in spec:
                attrs[attr] = f.boolean(spec[attr], f"{where}.{attr}")
        member_of = f.names(spec.get("member_of", []), f"{where}.member_of")
        state.roles[name] = RoleSpec(name, attrs, member_of)


def _grants(f: _File, raw: Any, where: str, allowed: tuple[str, ...]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for grantee, privs in f.table(raw, where).items():
        out[grantee] = f.names(privs, f"{where}.{grantee}", allowed)
    return out


OBJECT_KINDS = (
    "table",
    "view",
    "materialized view",
    "sequence",
    "foreign table",
    "function",
    "procedure",
    "aggregate",
    "type",
    "domain",
    "event trigger",
)


def _load_schemas(f: _File, state: SecurityState) -> None:
    for name, kind in f.table(f.data.get("other_objects", {}), "other_objects").items():
        kind = f.string(kind, f"other_objects.{name}")
        if kind not in OBJECT_KINDS:
            raise f.fail(f"other_objects.{name}", f"kind must be one of {', '.join(OBJECT_KINDS)}")
        state.other_objects[name] = ObjectSpec(name, kind)
    if "database" in f.data:
        spec = f.table(f.data["database"], "database")
        f.check_keys(spec, "database", {"grants"})
        state.database = _grants(f, spec.get("grants", {}), "database.grants", DATABASE_PRIVILEGES)
    for name, raw in f.table(f.data.get("schemas"), "schemas").items():
        where = f"schemas.{name}"
        spec = f.table(raw, where)
        f.check_keys(spec, where, {"owner", "grants"})
        state.schemas[name] = SchemaSpec(
            name,
            f.string(spec.get("owner"), f"{where}.owner"),
            _grants(f, spec.get("grants", {}), f"{where}.grants", ("USAGE", "CREATE")),
        )
    for owner, raw in f.table(f.data.get("default_privileges", {}), "default_privileges").items():
        where = f"default_privileges.{owner}"
        spec = f.table(raw, where)
        f.check_keys(spec, where, set(DEFAULT_ACL_TYPES))
        for object_type, grants in spec.items():
            allowed = {"tables": TABLE_PRIVILEGES, "sequences": ("USAGE", "SELECT", "UPDATE")}.get(
                object_type, ("EXECUTE",)
            )
            state.default_privileges[(owner, object_type)] = _grants(
                f, grants, f"{where}.{object_type}", allowed
            )


def function_identity(signature: str) -> tuple[str, str]:
    """('chat.f', 'chat.f(uuid,text)') from 'chat.f(p_a uuid, p_b text)': names dropped.

    Types are joined with a bare comma because that is how regprocedure prints them,
    and the catalog side keys live functions by that text.
    """
    m = _SIGNATURE.match(signature.strip())
    if not m:
        raise ValueError(signature)
    name, args = m.group(1), m.group(2).strip()
    types = []
    for arg in filter(None, (a.strip() for a in args.split(","))):
        parts = arg.split(None, 1)
        types.append(parts[1] if len(parts) == 2 else parts[0])
    return name, f"{name}({','.join(types)})"


def checked_search_path(value: str) -> str | None:
    """The normalized search_path, or None when a caller could shadow a name through it.

    PostgreSQL searches the caller's temporary schema first for relations and types
    unless the path names pg_temp, so '' is not safe: pg_temp must be named, and last,
    and no schema others may create in ("$user", public) may appear.
    """
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts or parts[-1] != "pg_temp" or "pg_temp" in parts[:-1]:
        return None
    if {"public", '"$user"', "$user"} & set(parts):
        return None
    return normalize_search_path(value)


def _load_functions(f: _File, state: SecurityState) -> None:
    keys = {
        "signature",
        "returns",
        "language",
        "volatility",
        "security_definer",
        "search_path",
        "execute",
        "body",
    }
    for key, raw in f.table(f.data.get("functions"), "functions").items():
        where = f"functions.{key}"
        spec = f.table(raw, where)
        f.check_keys(spec, where, keys | {"owner", "rows"})
        missing = sorted(keys - set(spec))
        if missing:
            raise f.fail(where, f"missing {', '.join(missing)}")
        signature = f.string(spec["signature"], f"{where}.signature")
        try:
            _, identity = function_identity(signature)
        except ValueError:
            raise f.fail(
                where, f"signature {signature!r} is not schema.name(arg type, ...)"
            ) from None
        search_path = f.string(spec["search_path"], f"{where}.search_path")
        if checked_search_path(search_path) is None:
            raise f.fail(
                where,
                f"search_path {search_path!r} lets a caller shadow names: "
                "name pg_temp, last (e.g. 'pg_catalog, pg_temp')",
            )
        volatility = f.string(spec["volatility"], f"{where}.volatility").lower()
        if volatility not in {"volatile", "stable", "immutable"}:
            raise f.fail(where, "volatility must be volatile, stable or immutable")
        returns = f.string(spec["returns"], f"{where}.returns")
        state.functions[identity] = FunctionSpec(
            key=key,
            signature=signature,
            identity=identity,
            returns=returns,
            language=f.string(spec["language"], f"{where}.language"),
            volatility=volatility,
            security_definer=f.boolean(spec["security_definer"], f"{where}.security_definer"),
            search_path=checked_search_path(search_path),
            body=f.string(spec["body"], f"{where}.body"),
            execute=f.names(spec["execute"], f"{where}.execute"),
            owner=f.string(spec.get("owner", OWNER_ROLE), f"{where}.owner"),
            rows=_rows(f, spec, where, returns),
        )


def _rows(f: _File, spec: dict[str, object], where: str, returns: str) -> int | None:
    """ROWS: the planner's estimate for a set-returning function; 1000 when not declared."""
    set_returning = returns.lstrip().upper().startswith(("SETOF ", "TABLE("))
    if "rows" not in spec:
        return DEFAULT_FUNCTION_ROWS if set_returning else None
    rows = spec["rows"]
    if not set_returning:
        raise f.fail(where, "rows applies only to a set-returning function (SETOF or TABLE)")
    if type(rows) is not int or rows < 1:
        raise f.fail(where, f"rows must be a positive integer, not {rows!r}")
    return rows


def _load_table(f: _File, state: SecurityState) -> None:
    data = f.data
    f.check_keys(data, "top level", {"table", "owner", "rls", "grants", "policies", "triggers"})
    name = f.string(data.get("table"), "table")
    if not _QUALIFIED.match(name):
        raise f.fail("table", f"{name!r} must be schema-qualified, e.g. chat.messages")
    if name in state.tables:
        raise f.fail("table", f"{name} is declared twice")
    rls = f.table(data.get("rls", {}), "rls")
    f.check_keys(rls, "rls", {"enabled", "forced"})
    grants: dict[str, TableGrant] = {}
    for grantee, raw in f.table(data.get("grants", {}), "grants").items():
        where = f"grants.{grantee}"
        spec = f.table(raw, where)
        f.check_keys(spec, where, {"table", "columns"})
        columns = {
            priv.upper(): f.names(cols, f"{where}.columns.{priv}")
            for priv, cols in f.table(spec.get("columns", {}), f"{where}.columns").items()
        }
        bad = sorted(set(columns) - set(COLUMN_PRIVILEGES))
        if bad:
            raise f.fail(f"{where}.columns", f"unknown privilege(s) {', '.join(bad)}")
        grants[grantee] = TableGrant(
            f.names(spec.get("table", []), f"{where}.table", TABLE_PRIVILEGES), columns
        )
    policies: dict[str, PolicySpec] = {}
    raw_policies = data.get("policies", [])
    if not isinstance(raw_policies, list):
        raise f.fail("policies", "expected [[policies]] entries")
    for i, raw in enumerate(raw_policies):
        where = f"policies[{i}]"
        spec = f.table(raw, where)
        f.check_keys(spec, where, {"name", "command", "roles", "permissive", "using", "with_check"})
        pname = f.string(spec.get("name"), f"{where}.name")
        if pname in policies:
            raise f.fail(where, f"policy {pname} is declared twice")
        command = f.string(spec.get("command", "ALL"), f"{where}.command").upper()
        if command not in COMMANDS:
            raise f.fail(where, f"command must be one of {', '.join(COMMANDS)}")
        using = spec.get("using")
        check = spec.get("with_check")
        if command == "INSERT" and using is not None:
            raise f.fail(where, "an INSERT policy takes with_check only")
        if command in {"SELECT", "DELETE"} and check is not None:
            raise f.fail(where, f"a {command} policy takes using only")
        if using is None and check is None:
            raise f.fail(where, "a policy needs using or with_check")
        policies[pname] = PolicySpec(
            name=pname,
            table=name,
            command=command,
            roles=f.names(spec.get("roles", ["PUBLIC"]), f"{where}.roles"),
            permissive=f.boolean(spec.get("permissive", True), f"{where}.permissive"),
            using=None if using is None else f.string(using, f"{where}.using").strip(),
            with_check=None if check is None else f.string(check, f"{where}.with_check").strip(),
        )
    triggers: dict[str, TriggerSpec] = {}
    raw_triggers = data.get("triggers", [])
    if not isinstance(raw_triggers, list):
        raise f.fail("triggers", "expected [[triggers]] entries")
    for i, raw in enumerate(raw_triggers):
        where = f"triggers[{i}]"
        spec = f.table(raw, where)
        f.check_keys(spec, where, {"name", "definition", "enabled"})
        tname = f.string(spec.get("name"), f"{where}.name")
        definition = " ".join(f.string(spec.get("definition"), f"{where}.definition").split())
        if not definition.startswith(f"CREATE TRIGGER {tname} ") or f" ON {name} " not in (
            definition
        ):
            raise f.fail(
                where,
                f"definition must be CREATE TRIGGER {tname} ... ON {name} ..., as "
                "pg_get_triggerdef() prints it",
            )
        if tname in triggers:
            raise f.fail(where, f"trigger {tname} is declared twice")
        triggers[tname] = TriggerSpec(
            tname, name, definition, f.boolean(spec.get("enabled", True), f"{where}.enabled")
        )
    state.tables[name] = TableSpec(
        name=name,
        rls_enabled=f.boolean(rls.get("enabled", False), "rls.enabled"),
        rls_forced=f.boolean(rls.get("forced", False), "rls.forced"),
        grants=grants,
        policies=policies,
        owner=f.string(data.get("owner", OWNER_ROLE), "owner"),
        triggers=triggers,
    )


def _check_references(state: SecurityState, root: Path) -> None:
    """Every role a grant or policy names is declared (or a built-in pg_ role, or PUBLIC)."""

    def known(role: str) -> bool:
        return role in state.roles or role == "PUBLIC" or role.startswith("pg_")

    for role in state.database or {}:
        if not known(role):
            raise ChatsecError(
                f"policies in {root}: the database grants name undeclared role {role}"
            )
    for table in state.tables.values():
        names = [table.owner, *table.grants, *(r for p in table.policies.values() for r in p.roles)]
        for role in names:
            if not known(role):
                raise ChatsecError(f"policies in {root}: {table.name} names undeclared role {role}")
    for fn in state.functions.values():
        for role in [fn.owner, *fn.execute]:
            if not known(role):
                raise ChatsecError(
                    f"policies in {root}: {fn.signature} names undeclared role {role}"
                )
