"""The difference between the declared and the live security state, as changes with their SQL.

Every change carries the SQL that would bring the database to the declaration (`up`)
and the SQL that restores what is there now (`down`): `chatsec plan` prints them,
`chatsec revision` writes them into a new, self-contained revision.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Literal

import psycopg

from chatsec.policy import render
from chatsec.policy.catalog import read_live_state
from chatsec.policy.model import (
    OWNER_ROLE,
    PUBLIC,
    FunctionSpec,
    Grants,
    PolicySpec,
    SecurityState,
    TableGrant,
    TableSpec,
)
from chatsec.policy.normalize import normalize_policies

Action = Literal["missing", "extra", "changed"]
Conn = psycopg.Connection[tuple[object, ...]]
# Cluster-wide: a downgrade of one database never reverts them (docs/policies.md).
ROLE_KINDS = {"role", "membership"}
# `run_as` for statements that need the migrator login's own rights: CREATEROLE, the
# database's ownership, and membership in both the old and the new owner of an object.
MIGRATOR = "migrator"


@dataclass(frozen=True)
class Change:
    """One difference: what kind of object, which, how it differs, and the SQL both ways.

    The SQL runs as `run_as` (a role the migrator may SET ROLE to, or MIGRATOR). Only a
    schema's owner may create in it: `create_in` lists (schema, role) pairs that get
    CREATE on the schema for this change only (an object owned by another role, such as
    the SECURITY DEFINER helpers' chat_definer, is created or replaced by that role).
    """

    kind: str  # role, membership, database-grant, schema-grant, table-grant, sequence-grant,
    # function, function-grant, default-privilege, rls, policy, table
    object: str
    action: Action
    detail: str
    up: list[str] = field(default_factory=list)
    down: list[str] = field(default_factory=list)
    run_as: str = OWNER_ROLE
    create_in: tuple[tuple[str, str], ...] = ()


def diff_live(conn: Conn, declared: SecurityState) -> list[Change]:
    """Compare inside a transaction that is always rolled back (normalization creates temp objects)."""
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL search_path = pg_catalog")
        live = read_live_state(conn, declared)
        # Policies may call declared functions that do not exist yet (before the
        # revision that creates them): create those inside this rolled-back transaction.
        # One that cannot be created here (its body needs a later schema) is reported
        # as missing anyway; a policy that needs it then fails to compile, clearly.
        for ident, fn in declared.functions.items():
            if ident not in live.functions:
                try:
                    with conn.transaction():
                        conn.execute(render.create_function(fn).encode())
                except psycopg.Error:
                    pass
        normalized = normalize_policies(conn, declared)
    return compare(declared, live, normalized)


def compare(
    declared: SecurityState, live: SecurityState, normalized: dict[str, dict[str, PolicySpec]]
) -> list[Change]:
    # Order is execution order: functions exist before the policies that call them, and
    # an undeclared function is dropped only after the policies that used it.
    functions = _functions(declared, live)
    dropped = [c for c in functions if c.kind == "function" and c.action == "extra"]
    changes: list[Change] = []
    changes += [replace(c, run_as=MIGRATOR) for c in _roles(declared, live)]
    changes += _database(declared, live)
    changes += _schemas(declared, live)
    changes += [c for c in functions if c not in dropped]
    changes += _default_privileges(declared, live)
    changes += _tables(declared, live, normalized)
    changes += _sequences(live)
    changes += _other_objects(declared, live)
    changes += dropped
    return changes


def _roles(declared: SecurityState, live: SecurityState) -> list[Change]:
    out = []
    for name, role in sorted(declared.roles.items()):
        current = live.roles.get(name)
        if current is None:
            out.append(
                Change(
                    "role", name, "missing", "role does not exist", [render.create_role(role)], []
                )
            )
            members_now: frozenset[str] = frozenset()
        else:
            changed = {k for k, v in role.attributes.items() if current.attributes.get(k) != v}
            if changed:
                detail = ", ".join(
                    f"{k}: {current.attributes[k]} -> {role.attributes[k]}" for k in sorted(changed)
                )
                out.append(
                    Change(
                        "role",
                        name,
                        "changed",
                        detail,
                        [render.alter_role(name, role.attributes, changed)],
                        [render.alter_role(name, current.attributes, changed)],
                    )
                )
            members_now = current.member_of
        for group in sorted(role.member_of - members_now):
            out.append(
                Change(
                    "membership",
                    f"{name} in {group}",
                    "missing",
                    f"{name} is not a member of {group}",
                    [f"GRANT {render.ident(group)} TO {render.ident(name)}"],
                    [f"REVOKE {render.ident(group)} FROM {render.ident(name)}"],
                )
            )
        for group in sorted(members_now - role.member_of):
            out.append(
                Change(
                    "membership",
                    f"{name} in {group}",
                    "extra",
                    f"{name} is a member of {group}, which is not declared",
                    [f"REVOKE {render.ident(group)} FROM {render.ident(name)}"],
                    [f"GRANT {render.ident(group)} TO {render.ident(name)}"],
                )
            )
    return out


def _grant_diff(
    kind: str, obj: str, on: str, want: Grants, have: Grants, run_as: str = OWNER_ROLE
) -> list[Change]:
    out = []
    for grantee in sorted(set(want) | set(have)):
        w, h = want.get(grantee, frozenset()), have.get(grantee, frozenset())
        if w - h:
            out.append(
                Change(
                    kind,
                    f"{obj} to {grantee}",
                    "missing",
                    f"{', '.join(sorted(w - h))} not granted to {grantee}",
                    [render.grant_privileges(w - h, on, grantee)],
                    [render.grant_privileges(w - h, on, grantee, revoke=True)],
                    run_as=run_as,
                )
            )
        if h - w:
            out.append(
                Change(
                    kind,
                    f"{obj} to {grantee}",
                    "extra",
                    f"{', '.join(sorted(h - w))} granted to {grantee}, not declared",
                    [render.grant_privileges(h - w, on, grantee, revoke=True)],
                    [render.grant_privileges(h - w, on, grantee)],
                    run_as=run_as,
                )
            )
    return out


def _database(declared: SecurityState, live: SecurityState) -> list[Change]:
    """Privileges on the current database; its name differs per environment, so the SQL
    names it with current_database() at run time."""
    if declared.database is None:
        return []
    # Login roles are per environment and undeclared: connecting is theirs to decide,
    # but TEMPORARY or CREATE would let one keep objects in the database.
    have = {
        role: privs - {"CONNECT"} if role not in declared.roles and role != PUBLIC else privs
        for role, privs in (live.database or {}).items()
    }
    return [
        replace(
            change,
            up=[render.on_current_database(s) for s in change.up],
            down=[render.on_current_database(s) for s in change.down],
            run_as=MIGRATOR,
        )
        for change in _grant_diff("database-grant", "database", "DATABASE", declared.database, have)
    ]


def _schemas(declared: SecurityState, live: SecurityState) -> list[Change]:
    out = []
    for name, schema in sorted(declared.schemas.items()):
        current = live.schemas.get(name)
        if current is None:
            out.append(Change("schema", name, "missing", "schema does not exist (deploy first)"))
            continue
        if current.owner != schema.owner:
            out.append(
                Change(
                    "schema",
                    name,
                    "changed",
                    f"owner {current.owner}, declared {schema.owner}",
                    [f"ALTER SCHEMA {render.ident(name)} OWNER TO {render.ident(schema.owner)}"],
                    [f"ALTER SCHEMA {render.ident(name)} OWNER TO {render.ident(current.owner)}"],
                )
            )
        out += _grant_diff(
            "schema-grant", name, f"SCHEMA {render.ident(name)}", schema.grants, current.grants
        )
    return out


def _body(text: str) -> str:
    return "\n".join(line.strip() for line in text.strip().splitlines())


def _function_differences(want: FunctionSpec, have: FunctionSpec) -> list[str]:
    diffs = []
    if want.returns.lower() != have.returns.lower():
        diffs.append(f"returns {have.returns}, declared {want.returns}")
    if want.language != have.language:
        diffs.append(f"language {have.language}, declared {want.language}")
    if want.volatility != have.volatility:
        diffs.append(f"{have.volatility}, declared {want.volatility}")
    if want.security_definer != have.security_definer:
        diffs.append("SECURITY DEFINER" if have.security_definer else "SECURITY INVOKER")
    if want.search_path != have.search_path:
        diffs.append(f"search_path {have.search_path!r}, declared {want.search_path!r}")
    if want.rows != have.rows:
        diffs.append(f"ROWS {have.rows}, declared {want.rows}")
    if _body(want.body) != _body(have.body):
        diffs.append("body differs")
    return diffs


def _schema_of(ident: str) -> str:
    return ident.partition(".")[0]


def _creating(declared: SecurityState, schema: str, *roles: str) -> tuple[tuple[str, str], ...]:
    """(schema, role) for each role that is not the schema's owner and so needs CREATE."""
    owner = declared.schemas[schema].owner if schema in declared.schemas else OWNER_ROLE
    return tuple((schema, r) for r in dict.fromkeys(roles) if r != owner)


def _owner_change(declared: SecurityState, kind: str, name: str, want: str, have: str) -> Change:
    """ALTER ... OWNER TO, as the migrator: it must be a member of both owners, and the
    new owner needs CREATE on the schema (ALTER TABLE also takes views)."""
    keyword = "FUNCTION" if kind == "function" else "TABLE"
    return Change(
        kind,
        name,
        "changed",
        f"owner {have}, declared {want}",
        [render.alter_owner(keyword, name, want)],
        [render.alter_owner(keyword, name, have)],
        run_as=MIGRATOR,
        create_in=_creating(declared, _schema_of(name), want, have),
    )


def _functions(declared: SecurityState, live: SecurityState) -> list[Change]:
    out = []
    # Declaration order: a SQL function's body may call one declared before it.
    for ident, fn in declared.functions.items():
        schema = _schema_of(ident)
        current = live.functions.get(ident)
        if current is None:
            up = [render.create_function(fn), _revoke_public_execute(ident)]
            up += [_execute(ident, g) for g in sorted(fn.execute)]
            out.append(
                Change(
                    "function",
                    ident,
                    "missing",
                    "function does not exist",
                    up,
                    [render.drop_function(fn)],
                    run_as=fn.owner,
                    create_in=_creating(declared, schema, fn.owner),
                )
            )
            continue
        diffs = _function_differences(fn, current)
        if diffs:
            # Replaced by its owner of the moment; an ownership change follows.
            out.append(
                Change(
                    "function",
                    ident,
                    "changed",
                    "; ".join(diffs),
                    [render.create_function(fn, replace=True)],
                    [current.definition or ""],
                    run_as=current.owner,
                    create_in=_creating(declared, schema, current.owner),
                )
            )
        if fn.owner != current.owner:
            out.append(_owner_change(declared, "function", ident, fn.owner, current.owner))
        want = {g: frozenset({"EXECUTE"}) for g in fn.execute}
        have = {g: frozenset({"EXECUTE"}) for g in current.execute}
        # Only the owner grants EXECUTE on its function (no one holds a grant option).
        out += _grant_diff(
            "function-grant", ident, f"FUNCTION {ident}", want, have, run_as=fn.owner
        )
    for ident, current in sorted(live.functions.items()):
        if ident not in declared.functions:
            out.append(
                Change(
                    "function",
                    ident,
                    "extra",
                    f"function is not declared in policies/ (owner {current.owner})",
                    [f"DROP FUNCTION {ident}"],
                    # Restoring it means restoring who may call it, not only its body.
                    [current.definition or "", _revoke_public_execute(ident)]
                    + [_execute(ident, g) for g in sorted(current.execute)],
                    run_as=current.owner,
                    create_in=_creating(declared, _schema_of(ident), current.owner),
                )
            )
    return out


def _execute(ident: str, grantee: str) -> str:
    return render.grant_privileges(frozenset({"EXECUTE"}), f"FUNCTION {ident}", grantee)


def _revoke_public_execute(ident: str) -> str:
    return render.grant_privileges(frozenset({"EXECUTE"}), f"FUNCTION {ident}", PUBLIC, revoke=True)


def _default_privileges(declared: SecurityState, live: SecurityState) -> list[Change]:
    out = []
    for (owner, object_type), want in sorted(declared.default_privileges.items()):
        have = live.default_privileges.get((owner, object_type), {})
        prefix = f"ALTER DEFAULT PRIVILEGES FOR ROLE {render.ident(owner)} "
        # Only that role itself (or a member: the migrator) may change them.
        for change in _grant_diff(
            "default-privilege", f"{object_type} of {owner}", object_type.upper(), want, have, owner
        ):
            out.append(
                replace(
                    change,
                    up=[prefix + s for s in change.up],
                    down=[prefix + s for s in change.down],
                )
            )
    return out


def _table_grant_changes(
    table: str, want: dict[str, TableGrant], have: dict[str, TableGrant], owner: str
) -> list[Change]:
    out = []
    for grantee in sorted(set(want) | set(have)):
        w, h = want.get(grantee, TableGrant()), have.get(grantee, TableGrant())
        add = TableGrant(
            w.table - h.table,
            {p: cols - h.columns.get(p, frozenset()) for p, cols in w.columns.items()},
        )
        remove = TableGrant(
            h.table - w.table,
            {p: cols - w.columns.get(p, frozenset()) for p, cols in h.columns.items()},
        )
        for grant, action, verb in (
            (add, "missing", "not granted"),
            (remove, "extra", "granted, not declared"),
        ):
            if grant.is_empty():
                continue
            parts = sorted(grant.table) + [
                f"{p}({', '.join(sorted(c))})" for p, c in sorted(grant.columns.items()) if c
            ]
            up = render.table_grant_statements(table, grantee, grant, revoke=(action == "extra"))
            down = render.table_grant_statements(
                table, grantee, grant, revoke=(action == "missing")
            )
            out.append(
                Change(
                    "table-grant",
                    f"{table} to {grantee}",
                    action,  # type: ignore[arg-type]
                    f"{', '.join(parts)} {verb} to {grantee}",
                    up,
                    down,
                    run_as=owner,
                )
            )
    return out


def _policy_fields(want: PolicySpec, have: PolicySpec) -> list[str]:
    diffs = []
    if want.command != have.command:
        diffs.append(f"FOR {have.command}, declared {want.command}")
    if want.permissive != have.permissive:
        diffs.append("RESTRICTIVE" if want.permissive else "PERMISSIVE")
    if want.roles != have.roles:
        diffs.append(
            f"TO {', '.join(sorted(have.roles))}, declared {', '.join(sorted(want.roles))}"
        )
    if want.using != have.using:
        diffs.append(f"USING {have.using}, declared {want.using}")
    if want.with_check != have.with_check:
        diffs.append(f"WITH CHECK {have.with_check}, declared {want.with_check}")
    return diffs


def _tables(
    declared: SecurityState, live: SecurityState, normalized: dict[str, dict[str, PolicySpec]]
) -> list[Change]:
    out = []
    # Every change to a table runs as its declared owner: an owner change is the first of
    # its changes in an upgrade, and the last in a downgrade.
    for name, table in sorted(declared.tables.items()):
        current = live.tables.get(name)
        if current is None:
            out.append(Change("table", name, "missing", "table does not exist (deploy first)"))
            continue
        if table.owner != current.owner:
            out.append(_owner_change(declared, "table", name, table.owner, current.owner))
        if table.rls_enabled != current.rls_enabled:
            out.append(
                Change(
                    "rls",
                    name,
                    "changed",
                    f"row level security {'disabled' if table.rls_enabled else 'enabled'}, "
                    f"declared {'enabled' if table.rls_enabled else 'disabled'}",
                    [render.rls_statement(name, enabled=table.rls_enabled)],
                    [render.rls_statement(name, enabled=current.rls_enabled)],
                    run_as=table.owner,
                )
            )
        if table.rls_forced != current.rls_forced:
            out.append(
                Change(
                    "rls",
                    name,
                    "changed",
                    f"row level security {'not forced' if table.rls_forced else 'forced'}, "
                    f"declared {'forced' if table.rls_forced else 'not forced'}",
                    [render.rls_statement(name, forced=table.rls_forced)],
                    [render.rls_statement(name, forced=current.rls_forced)],
                    run_as=table.owner,
                )
            )
        out += _table_grant_changes(name, table.grants, current.grants, table.owner)
        want_policies = normalized.get(name, {})
        for pname, want in sorted(want_policies.items()):
            have = current.policies.get(pname)
            if have is None:
                out.append(
                    Change(
                        "policy",
                        f"{pname} on {name}",
                        "missing",
                        "policy does not exist",
                        [render.create_policy(table.policies[pname])],
                        [render.drop_policy(want)],
                        run_as=table.owner,
                    )
                )
                continue
            diffs = _policy_fields(want, have)
            if diffs:
                out.append(
                    Change(
                        "policy",
                        f"{pname} on {name}",
                        "changed",
                        "; ".join(diffs),
                        [render.drop_policy(have), render.create_policy(table.policies[pname])],
                        [render.drop_policy(want), render.create_policy(have)],
                        run_as=table.owner,
                    )
                )
        for pname, have in sorted(current.policies.items()):
            if pname not in want_policies:
                out.append(
                    Change(
                        "policy",
                        f"{pname} on {name}",
                        "extra",
                        f"policy is not declared in policies/ "
                        f"({'PERMISSIVE' if have.permissive else 'RESTRICTIVE'} FOR {have.command} "
                        f"TO {', '.join(sorted(have.roles))} USING {have.using} "
                        f"WITH CHECK {have.with_check})",
                        [render.drop_policy(have)],
                        [render.create_policy(have)],
                        run_as=table.owner,
                    )
                )
        out += _triggers(table, current)
    for name, current in sorted(live.tables.items()):
        if name not in declared.tables:
            out.append(
                Change(
                    "table",
                    name,
                    "extra",
                    "table is not declared in policies/ "
                    f"(RLS {'on' if current.rls_enabled else 'off'})",
                )
            )
    return out


def _triggers(table: TableSpec, current: TableSpec) -> list[Change]:
    """Every trigger on a declared table as declared, enabled; any other is drift."""
    out = []
    name = table.name
    for tname, want in sorted(table.triggers.items()):
        have = current.triggers.get(tname)
        drop = f"DROP TRIGGER {render.ident(tname)} ON {render.ident(name)}"
        if have is None:
            out.append(
                Change(
                    "trigger",
                    f"{tname} on {name}",
                    "missing",
                    "trigger does not exist",
                    [want.definition],
                    [drop],
                    run_as=table.owner,
                )
            )
            continue
        if have.definition != want.definition:
            out.append(
                Change(
                    "trigger",
                    f"{tname} on {name}",
                    "changed",
                    f"{have.definition}, declared {want.definition}",
                    [drop, want.definition],
                    [drop, have.definition],
                    run_as=table.owner,
                )
            )
        if have.enabled != want.enabled:
            state = "ENABLE" if want.enabled else "DISABLE"
            undo = "DISABLE" if want.enabled else "ENABLE"
            alter = f"ALTER TABLE {render.ident(name)} {{}} TRIGGER {render.ident(tname)}"
            out.append(
                Change(
                    "trigger",
                    f"{tname} on {name}",
                    "changed",
                    "trigger is disabled" if want.enabled else "trigger is enabled",
                    [alter.format(state)],
                    [alter.format(undo)],
                    run_as=table.owner,
                )
            )
    for tname, have in sorted(current.triggers.items()):
        if tname not in table.triggers:
            out.append(
                Change(
                    "trigger",
                    f"{tname} on {name}",
                    "extra",
                    f"trigger is not declared in policies/: {have.definition}",
                    [f"DROP TRIGGER {render.ident(tname)} ON {render.ident(name)}"],
                    [have.definition],
                    run_as=table.owner,
                )
            )
    return out


_DROP_KEYWORD = {"rule": "RULE", "event trigger": "EVENT TRIGGER"}
_DEFINITION_SHOWN = 200


def _other_objects(declared: SecurityState, live: SecurityState) -> list[Change]:
    """Objects neither declared nor owned by an extension: an error wherever they are."""
    out = []
    for name, have in sorted(live.other_objects.items()):
        known = declared.other_objects.get(name)
        if known is not None and known.kind == have.kind:
            continue
        keyword = _DROP_KEYWORD.get(have.kind, have.kind.upper())
        definition = have.definition
        if len(definition) > _DEFINITION_SHOWN:
            definition = definition[:_DEFINITION_SHOWN] + "..."
        # Objects a chatsec role owns are dropped as that role; others need the migrator
        # (or their owner), and a revision says so by failing.
        owner = have.owner if have.owner in declared.roles else MIGRATOR
        out.append(
            Change(
                "object",
                f"{have.kind} {name}",
                "extra",
                f"{have.kind} is not declared in policies/ (owner {have.owner})"
                + (f": {definition}" if definition else ""),
                [f"DROP {keyword} {name}"],
                [],
                run_as=owner,
            )
        )
    return out


def _sequences(live: SecurityState) -> list[Change]:
    # No sequence is declared: any grant on one is extra.
    out = []
    for name, grants in sorted(live.sequences.items()):
        out += _grant_diff("sequence-grant", name, f"SEQUENCE {render.ident(name)}", {}, grants)
    return out
