"""Logins policies/ does not declare: which declared roles they belong to, what they hold."""

from __future__ import annotations

from collections import defaultdict

from chatsec.audit.check import Check
from chatsec.audit.checks._roles import MIGRATOR_GROUPS, RoleGraph, database_owner
from chatsec.audit.context import DEFINER_ROLE, OWNER_ROLE, AuditContext
from chatsec.audit.finding import Finding

# What a login holds in this database by name: ACL entries naming it and objects it owns
# (extension members aside: they belong to whoever installed the extension). Only logins
# that are not superusers, filtered in every branch: naming every catalog object is slow.
# Columns: role, kind, schema (NULL outside one), object, what it holds.
_HOLDINGS = """
WITH logins AS (SELECT oid FROM pg_catalog.pg_roles WHERE rolcanlogin AND NOT rolsuper)
SELECT pg_catalog.pg_get_userbyid(a.grantee), 'database', NULL, d.datname, a.privilege_type
  FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a
 WHERE d.datname = pg_catalog.current_database() AND a.grantee IN (SELECT oid FROM logins)
   AND a.grantee <> d.datdba
UNION ALL
SELECT pg_catalog.pg_get_userbyid(a.grantee), 'schema', n.nspname, n.nspname, a.privilege_type
  FROM pg_catalog.pg_namespace n, pg_catalog.aclexplode(n.nspacl) a
 WHERE a.grantee IN (SELECT oid FROM logins) AND a.grantee <> n.nspowner
UNION ALL
SELECT pg_catalog.pg_get_userbyid(a.grantee),
       CASE c.relkind WHEN 'S' THEN 'sequence' ELSE 'relation' END,
       n.nspname, c.oid::pg_catalog.regclass::text, a.privilege_type
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
       pg_catalog.aclexplode(c.relacl) a
 WHERE a.grantee IN (SELECT oid FROM logins) AND a.grantee <> c.relowner
UNION ALL
SELECT pg_catalog.pg_get_userbyid(a.grantee), 'relation', n.nspname,
       c.oid::pg_catalog.regclass::text || '.' || pg_catalog.quote_ident(att.attname),
       a.privilege_type
  FROM pg_catalog.pg_attribute att
  JOIN pg_catalog.pg_class c ON c.oid = att.attrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
       pg_catalog.aclexplode(att.attacl) a
 WHERE att.attacl IS NOT NULL AND a.grantee IN (SELECT oid FROM logins)
   AND a.grantee <> c.relowner
UNION ALL
SELECT pg_catalog.pg_get_userbyid(a.grantee), 'function', n.nspname,
       p.oid::pg_catalog.regprocedure::text, a.privilege_type
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace,
       pg_catalog.aclexplode(p.proacl) a
 WHERE a.grantee IN (SELECT oid FROM logins) AND a.grantee <> p.proowner
UNION ALL
SELECT pg_catalog.pg_get_userbyid(a.grantee), 'type', n.nspname,
       t.oid::pg_catalog.regtype::text, a.privilege_type
  FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace,
       pg_catalog.aclexplode(t.typacl) a
 WHERE a.grantee IN (SELECT oid FROM logins) AND a.grantee <> t.typowner
UNION ALL
SELECT pg_catalog.pg_get_userbyid(a.grantee), 'large object', NULL, l.oid::text, a.privilege_type
  FROM pg_catalog.pg_largeobject_metadata l, pg_catalog.aclexplode(l.lomacl) a
 WHERE a.grantee IN (SELECT oid FROM logins) AND a.grantee <> l.lomowner
UNION ALL
SELECT pg_catalog.pg_get_userbyid(a.grantee), 'parameter', NULL, p.parname, a.privilege_type
  FROM pg_catalog.pg_parameter_acl p, pg_catalog.aclexplode(p.paracl) a
 WHERE a.grantee IN (SELECT oid FROM logins)
UNION ALL
SELECT pg_catalog.pg_get_userbyid(d.defaclrole), 'default privileges', NULL, '', 'defaults'
  FROM pg_catalog.pg_default_acl d
 WHERE d.defaclrole IN (SELECT oid FROM logins)
UNION ALL
SELECT pg_catalog.pg_get_userbyid(o.owner), o.kind, o.schema, o.name, 'owner'
  FROM (SELECT c.relowner AS owner, 'relation' AS kind, n.nspname AS schema,
               c.oid::pg_catalog.regclass::text AS name, c.tableoid AS cat, c.oid
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE c.relkind NOT IN ('i', 'I', 't') AND c.relowner IN (SELECT oid FROM logins)
        UNION ALL
        SELECT p.proowner, 'function', n.nspname, p.oid::pg_catalog.regprocedure::text,
               p.tableoid, p.oid
          FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE p.proowner IN (SELECT oid FROM logins)
        UNION ALL
        SELECT t.typowner, 'type', n.nspname, t.oid::pg_catalog.regtype::text, t.tableoid, t.oid
          FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
         WHERE t.typrelid = 0 AND t.typelem = 0 AND t.typowner IN (SELECT oid FROM logins)
        UNION ALL
        SELECT n.nspowner, 'schema', n.nspname, n.nspname, n.tableoid, n.oid
          FROM pg_catalog.pg_namespace n WHERE n.nspowner IN (SELECT oid FROM logins)
        UNION ALL
        SELECT l.lomowner, 'large object', NULL, l.oid::text,
               'pg_catalog.pg_largeobject'::pg_catalog.regclass, l.oid
          FROM pg_catalog.pg_largeobject_metadata l WHERE l.lomowner IN (SELECT oid FROM logins)
        UNION ALL
        SELECT e.extowner, 'extension', NULL, e.extname, e.tableoid, e.oid
          FROM pg_catalog.pg_extension e WHERE e.extowner IN (SELECT oid FROM logins)
        UNION ALL
        SELECT t.evtowner, 'event trigger', NULL, t.evtname, t.tableoid, t.oid
          FROM pg_catalog.pg_event_trigger t WHERE t.evtowner IN (SELECT oid FROM logins)) o
 WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend dep
                    WHERE dep.classid = o.cat AND dep.objid = o.oid AND dep.deptype = 'e')
"""
# policies/ compares no grant on the functions and tables of this schema (only its sequences).
_UNCOMPARED_SCHEMA = "extensions"


def _compared_elsewhere(ctx: AuditContext, kind: str, schema: str | None, held: str) -> bool:
    """Reported by another check already: one breakage, one check."""
    if held in {"CREATE", "TEMPORARY"} and kind in {"database", "schema"}:
        return True  # create-privileges names the role and how it can create
    if held == "owner":
        return False
    if kind == "database":
        return True  # chatsec plan compares every grant on the database (grants-match)
    if schema not in ctx.declared.schemas:
        return False
    # ... and every grant on the declared schemas, their tables, columns, sequences and
    # functions (mirrors policy.catalog.read_live_state).
    if kind in {"schema", "sequence"}:
        return True
    return kind in {"relation", "function"} and schema != _UNCOMPARED_SCHEMA


def _describe(kind: str, name: str, held: str) -> str:
    if held == "owner":
        return f"owns {kind} {name}"
    if kind == "default privileges":
        return "default privileges for the objects it creates (ALTER DEFAULT PRIVILEGES)"
    return f"{held} on {kind} {name}"


def _holdings(ctx: AuditContext) -> dict[str, list[str]]:
    """Per role: what it holds in its own name, as lines ready to show."""
    held: dict[str, list[str]] = defaultdict(list)
    for role, kind, schema, name, what in ctx.conn.execute(_HOLDINGS).fetchall():
        in_schema = None if schema is None else str(schema)
        if role is None or _compared_elsewhere(ctx, str(kind), in_schema, str(what)):
            continue
        held[str(role)].append(_describe(str(kind), str(name), str(what)))
    return held


def _membership_problem(
    graph: RoleGraph, login: str, migrator: bool, app: bool, declared: set[str]
) -> str | None:
    """What is wrong with the declared roles `login` belongs to, or None."""
    chains = {g: c for g, c in graph.chains(login).items() if g in declared}
    if app:
        # app-user-attributes reports an application login in chat_owner or chat_definer.
        chains = {g: c for g, c in chains.items() if g not in {OWNER_ROLE, DEFINER_ROLE}}
    if migrator:
        unexpected = {g: c for g, c in chains.items() if g not in MIGRATOR_GROUPS or len(c) > 1}
        expected = (
            "the database owner (the migrator) belongs to "
            + ", ".join(sorted(MIGRATOR_GROUPS))
            + " directly and to nothing else declared"
        )
    else:
        direct = [g for g, c in chains.items() if len(c) == 1 and g not in MIGRATOR_GROUPS]
        fine = len(chains) == 1 and len(direct) == 1
        unexpected = {} if fine else chains
        expected = (
            "a login belongs directly to exactly one of "
            + ", ".join(sorted(declared - MIGRATOR_GROUPS))
            + "; only the migrator to "
            + ", ".join(sorted(MIGRATOR_GROUPS))
        )
    if not unexpected:
        return None
    listed = ", ".join(
        g + (" (directly)" if len(c) == 1 else " (through " + " -> ".join(c[:-1]) + ")")
        for g, c in sorted(unexpected.items())
    )
    return f"member of {listed}: {expected}"


def _run(ctx: AuditContext) -> list[Finding]:
    graph = RoleGraph.read(ctx)
    declared = set(ctx.declared.roles)
    migrator = database_owner(ctx)
    app_roles = graph.app_roles()
    holdings = _holdings(ctx)
    out = []
    for role in sorted(graph.roles.values(), key=lambda r: r.name):
        # Superusers hold everything by definition; privileged-login-hba covers them.
        if not role.login or role.superuser or role.name in declared:
            continue
        name = role.name
        problem = _membership_problem(graph, name, name == migrator, name in app_roles, declared)
        if problem:
            out.append(
                CHECK.finding(
                    name,
                    f"login {name} is not declared in policies/ and is a {problem}",
                    remediation=f'REVOKE ... FROM "{name}"',
                )
            )
        held = holdings.get(name, [])
        # The migrator owns the database and what it made there (alembic_version, the
        # extensions); an application login's ownership is app-user-attributes'.
        if name == migrator or name in app_roles:
            held = [h for h in held if not h.startswith("owns ")]
        if held:
            shown = "; ".join(held[:10]) + (f" (+{len(held) - 10} more)" if len(held) > 10 else "")
            out.append(
                CHECK.finding(
                    name,
                    f"login {name} is not declared in policies/ and holds, in its own name: "
                    f"{shown}; give logins privileges only through a declared role",
                    remediation=f'REVOKE ... FROM "{name}"; REASSIGN OWNED BY "{name}" TO chat_owner',
                )
            )
    return out


CHECK = Check(
    id="undeclared-logins",
    title="Logins hold nothing but one declared role",
    category="privileges",
    level="warning",
    description="Login roles not declared in policies/roles.toml (superusers aside): the "
    "database owner (the migrator) may belong to chat_owner, chat_definer, chat_identity and "
    "chat_key_rotator, directly; any other login to exactly one other declared role "
    "(app_user, chat_auditor), directly; every other membership (direct or "
    "indirect) is a warning naming the chain. So is anything a login holds in its "
    "own name in this database: grants on schemas, relations, columns, functions, "
    "types, large objects, parameters, default privileges, and ownership (the "
    "migrator's aside); grants chatsec plan compares (grants-match), "
    "CREATE/TEMPORARY (create-privileges) and an application login's ownership or "
    "owner-role membership (app-user-attributes) are left to those checks. Needs: "
    "catalog read.",
    remediation="REVOKE the membership or privilege; grant through a declared role",
    run=_run,
)
