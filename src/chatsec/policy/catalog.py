"""Reading the live security state from PostgreSQL's catalog into the declared state's shapes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import psycopg

from chatsec.policy.model import (
    DEFAULT_ACL_TYPES,
    PUBLIC,
    FunctionSpec,
    Grants,
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

Conn = psycopg.Connection[tuple[object, ...]]

# aclexplode() on the effective ACL: a NULL acl means the built-in default, which
# for functions includes EXECUTE for PUBLIC; grantee 0 is PUBLIC.
_ACL_GRANTEE = (
    "CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END"
)


def read_live_state(conn: Conn, declared: SecurityState) -> SecurityState:
    """The live state of every object kind the declaration covers, in its schemas."""
    schemas = sorted(declared.schemas)
    live = SecurityState()
    _read_roles(conn, declared.roles, live)
    _read_database(conn, live)
    _read_schemas(conn, schemas, live)
    _read_tables(conn, schemas, live)
    _read_functions(conn, [s for s in schemas if s != "extensions"], live)
    _read_default_privileges(conn, sorted({o for o, _ in declared.default_privileges}), live)
    _read_other_objects(conn, schemas, live)
    return live


def _names(value: object) -> frozenset[str]:
    """A text[] column as a set of names."""
    assert isinstance(value, list)
    return frozenset(str(v) for v in value)


def _read_roles(conn: Conn, roles: Iterable[str], live: SecurityState) -> None:
    rows = conn.execute(
        """
        SELECT r.rolname, r.rolcanlogin, r.rolsuper, r.rolcreatedb, r.rolcreaterole,
               r.rolbypassrls, r.rolreplication, r.rolinherit,
               ARRAY(SELECT g.rolname::text FROM pg_catalog.pg_auth_members m
                       JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
                      WHERE m.member = r.oid ORDER BY 1)
          FROM pg_catalog.pg_roles r
         WHERE r.rolname = ANY(%s)
        """,
        (list(roles),),
    ).fetchall()
    for name, login, su, cdb, crole, bypass, repl, inherit, member_of in rows:
        attrs = {
            "login": bool(login),
            "superuser": bool(su),
            "createdb": bool(cdb),
            "createrole": bool(crole),
            "bypassrls": bool(bypass),
            "replication": bool(repl),
            "inherit": bool(inherit),
        }
        live.roles[str(name)] = RoleSpec(str(name), attrs, _names(member_of))


def _acl_rows(conn: Conn, query: str, params: tuple[object, ...]) -> dict[str, Grants]:
    out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for obj, grantee, priv in conn.execute(query, params).fetchall():
        out[str(obj)][str(grantee)].add(str(priv))
    return {k: {g: frozenset(p) for g, p in v.items()} for k, v in out.items()}


def _read_database(conn: Conn, live: SecurityState) -> None:
    # acldefault('d', ...) is CONNECT and TEMPORARY for PUBLIC: an untouched database
    # shows them, as it should.
    live.database = _acl_rows(
        conn,
        f"""
        SELECT d.datname, {_ACL_GRANTEE}, a.privilege_type
          FROM pg_catalog.pg_database d,
               pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
         WHERE d.datname = pg_catalog.current_database() AND a.grantee <> d.datdba
        """,
        (),
    ).get(str(conn.info.dbname), {})


def _read_schemas(conn: Conn, schemas: list[str], live: SecurityState) -> None:
    grants = _acl_rows(
        conn,
        f"""
        SELECT n.nspname, {_ACL_GRANTEE}, a.privilege_type
          FROM pg_catalog.pg_namespace n,
               pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
         WHERE n.nspname = ANY(%s) AND a.grantee <> n.nspowner
        """,
        (schemas,),
    )
    for name, owner in conn.execute(
        "SELECT nspname, pg_catalog.pg_get_userbyid(nspowner) FROM pg_catalog.pg_namespace "
        "WHERE nspname = ANY(%s)",
        (schemas,),
    ).fetchall():
        live.schemas[str(name)] = SchemaSpec(str(name), str(owner), grants.get(str(name), {}))


def _read_tables(conn: Conn, schemas: list[str], live: SecurityState) -> None:
    tables = conn.execute(
        """
        SELECT c.oid, n.nspname || '.' || c.relname, c.relrowsecurity, c.relforcerowsecurity,
               pg_catalog.pg_get_userbyid(c.relowner)
          FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = ANY(%s) AND c.relkind IN ('r', 'p', 'v', 'm')
           AND n.nspname <> 'extensions'
        """,
        (schemas,),
    ).fetchall()
    oids = [t[0] for t in tables]
    table_acl = _acl_rows(
        conn,
        f"""
        SELECT c.oid, {_ACL_GRANTEE}, a.privilege_type
          FROM pg_catalog.pg_class c,
               pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) a
         WHERE c.oid = ANY(%s) AND a.grantee <> c.relowner
        """,
        (oids,),
    )
    col_acl: dict[str, dict[str, dict[str, set[str]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(set))
    )
    for oid, grantee, priv, col in conn.execute(
        f"""
        SELECT c.oid, {_ACL_GRANTEE}, a.privilege_type, att.attname
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_attribute att ON att.attrelid = c.oid
               AND att.attnum > 0 AND NOT att.attisdropped AND att.attacl IS NOT NULL,
               pg_catalog.aclexplode(att.attacl) a
         WHERE c.oid = ANY(%s) AND a.grantee <> c.relowner
        """,
        (oids,),
    ).fetchall():
        col_acl[str(oid)][str(grantee)][str(priv)].add(str(col))
    policies: dict[str, dict[str, PolicySpec]] = defaultdict(dict)
    for name, table, cmd, roles, permissive, using, check in conn.execute(
        """
        SELECT p.polname, n.nspname || '.' || c.relname, p.polcmd,
               ARRAY(SELECT CASE WHEN r = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(r) END
                       FROM unnest(p.polroles) r),
               p.polpermissive,
               pg_catalog.pg_get_expr(p.polqual, p.polrelid),
               pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid)
          FROM pg_catalog.pg_policy p
          JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
         WHERE p.polrelid = ANY(%s)
        """,
        (oids,),
    ).fetchall():
        policies[str(table)][str(name)] = PolicySpec(
            name=str(name),
            table=str(table),
            command=_POLCMD[str(cmd)],
            roles=_names(roles),
            permissive=bool(permissive),
            using=None if using is None else str(using),
            with_check=None if check is None else str(check),
        )
    triggers: dict[str, dict[str, TriggerSpec]] = defaultdict(dict)
    # Internal triggers (foreign keys' RI triggers) are the constraints' business.
    for table, tname, definition, enabled in conn.execute(
        """
        SELECT t.tgrelid::pg_catalog.regclass::text, t.tgname,
               pg_catalog.pg_get_triggerdef(t.oid), t.tgenabled IN ('O', 'A')
          FROM pg_catalog.pg_trigger t
         WHERE t.tgrelid = ANY(%s) AND NOT t.tgisinternal
        """,
        (oids,),
    ).fetchall():
        triggers[str(table)][str(tname)] = TriggerSpec(
            str(tname), str(table), " ".join(str(definition).split()), bool(enabled)
        )
    for oid, name, rls, forced, owner in tables:
        grantees = set(table_acl.get(str(oid), {})) | set(col_acl.get(str(oid), {}))
        grants = {
            g: TableGrant(
                table_acl.get(str(oid), {}).get(g, frozenset()),
                {p: frozenset(c) for p, c in col_acl.get(str(oid), {}).get(g, {}).items()},
            )
            for g in grantees
        }
        live.tables[str(name)] = TableSpec(
            str(name),
            bool(rls),
            bool(forced),
            grants,
            policies.get(str(name), {}),
            str(owner),
            triggers.get(str(name), {}),
        )
    live.sequences.update(
        _acl_rows(
            conn,
            f"""
            SELECT n.nspname || '.' || c.relname, {_ACL_GRANTEE}, a.privilege_type
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace,
                   pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('s', c.relowner))) a
             WHERE n.nspname = ANY(%s) AND c.relkind = 'S' AND a.grantee <> c.relowner
            """,
            (schemas,),
        )
    )


_POLCMD = {"*": "ALL", "r": "SELECT", "a": "INSERT", "w": "UPDATE", "d": "DELETE"}
_VOLATILITY = {"v": "volatile", "s": "stable", "i": "immutable"}


def _read_functions(conn: Conn, schemas: list[str], live: SecurityState) -> None:
    execute = _acl_rows(
        conn,
        f"""
        SELECT p.oid::pg_catalog.regprocedure::text, {_ACL_GRANTEE}, a.privilege_type
          FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace,
               pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
         WHERE n.nspname = ANY(%s) AND a.grantee <> p.proowner
        """,
        (schemas,),
    )
    for ident, returns, lang, vol, definer, config, src, definition, owner, rows in conn.execute(
        """
        SELECT p.oid::pg_catalog.regprocedure::text,
               pg_catalog.pg_get_function_result(p.oid), l.lanname, p.provolatile,
               p.prosecdef, p.proconfig, p.prosrc, pg_catalog.pg_get_functiondef(p.oid),
               pg_catalog.pg_get_userbyid(p.proowner),
               CASE WHEN p.proretset THEN p.prorows END
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
          JOIN pg_catalog.pg_language l ON l.oid = p.prolang
         WHERE n.nspname = ANY(%s)
        """,
        (schemas,),
    ).fetchall():
        search_path = None
        for item in config or []:  # type: ignore[attr-defined]
            key, _, value = str(item).partition("=")
            if key == "search_path":
                search_path = "" if value in ('""', "''") else normalize_search_path(value)
        identity = str(ident)
        live.functions[identity] = FunctionSpec(
            key=identity,
            signature=identity,
            identity=identity,
            returns=str(returns),
            language=str(lang),
            volatility=_VOLATILITY[str(vol)],
            security_definer=bool(definer),
            search_path=search_path,
            body=str(src),
            execute=frozenset(
                g for g, privs in execute.get(identity, {}).items() if "EXECUTE" in privs
            ),
            owner=str(owner),
            definition=str(definition),
            rows=None if rows is None else round(float(str(rows))),
        )


def _read_default_privileges(conn: Conn, owners: list[str], live: SecurityState) -> None:
    existing = {
        str(r[0])
        for r in conn.execute(
            "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", (owners,)
        ).fetchall()
    }
    for object_type, (objtype, code) in DEFAULT_ACL_TYPES.items():
        rows = conn.execute(
            f"""
            SELECT r.rolname, {_ACL_GRANTEE}, a.privilege_type
              FROM pg_catalog.pg_roles r
              LEFT JOIN pg_catalog.pg_default_acl d
                     ON d.defaclrole = r.oid AND d.defaclnamespace = 0 AND d.defaclobjtype = %s,
                   pg_catalog.aclexplode(coalesce(d.defaclacl, pg_catalog.acldefault(%s, r.oid))) a
             WHERE r.rolname = ANY(%s) AND a.grantee <> r.oid
            """,
            (objtype, code, owners),
        ).fetchall()
        per_owner: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
        for owner, grantee, priv in rows:
            per_owner[str(owner)][str(grantee)].add(str(priv))
        for owner in owners:
            # A role that does not exist yet will start with PostgreSQL's built-in
            # defaults once created: EXECUTE on its functions for PUBLIC.
            builtin = {PUBLIC: frozenset({"EXECUTE"})} if object_type == "functions" else {}
            live.default_privileges[(owner, object_type)] = (
                {g: frozenset(p) for g, p in per_owner.get(owner, {}).items()}
                if owner in existing
                else builtin
            )


# Everything an attacker could leave behind outside the declared tables and functions, in
# the declared schemas, in public, and in any schema app_user may use; what an installed
# extension owns (pg_depend 'e') is the extension's. Tables and views of the declared
# schemas (but extensions) and their functions are compared one by one elsewhere.
_OTHER_OBJECTS = """
WITH scanned AS (
  SELECT n.oid, n.nspname, n.nspname = ANY(%(declared)s) AND n.nspname <> 'extensions' AS compared
    FROM pg_catalog.pg_namespace n
   WHERE n.nspname = ANY(%(declared)s) OR n.nspname = 'public'
      OR (pg_catalog.to_regrole('app_user') IS NOT NULL
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname !~ '^pg_(toast|temp_)'
          AND pg_catalog.has_schema_privilege('app_user', n.oid, 'USAGE'))
), members AS (
  SELECT d.classid, d.objid FROM pg_catalog.pg_depend d WHERE d.deptype = 'e'
)
SELECT s.nspname || '.' || c.relname,
       CASE c.relkind WHEN 'r' THEN 'table' WHEN 'p' THEN 'table' WHEN 'v' THEN 'view'
            WHEN 'm' THEN 'materialized view' WHEN 'S' THEN 'sequence'
            WHEN 'f' THEN 'foreign table' END,
       pg_catalog.pg_get_userbyid(c.relowner),
       CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) ELSE '' END
  FROM pg_catalog.pg_class c JOIN scanned s ON s.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
   AND NOT (s.compared AND c.relkind IN ('r', 'p', 'v', 'm'))
   AND (c.relkind <> 'S' OR NOT EXISTS (  -- a serial column's sequence goes with its table
         SELECT 1 FROM pg_catalog.pg_depend d
          WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
            AND d.deptype IN ('a', 'i')))
   AND NOT EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                                             AND m.objid = c.oid)
UNION ALL
SELECT p.oid::pg_catalog.regprocedure::text,
       CASE p.prokind WHEN 'p' THEN 'procedure' WHEN 'a' THEN 'aggregate' ELSE 'function' END,
       pg_catalog.pg_get_userbyid(p.proowner),
       CASE WHEN p.prokind IN ('f', 'p') THEN pg_catalog.pg_get_functiondef(p.oid) ELSE '' END
  FROM pg_catalog.pg_proc p JOIN scanned s ON s.oid = p.pronamespace
 WHERE NOT s.compared
   AND NOT EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                                             AND m.objid = p.oid)
UNION ALL
SELECT pg_catalog.format_type(t.oid, NULL),
       CASE t.typtype WHEN 'd' THEN 'domain' ELSE 'type' END,
       pg_catalog.pg_get_userbyid(t.typowner),
       CASE t.typtype WHEN 'd' THEN 'domain over '
                                    || pg_catalog.format_type(t.typbasetype, t.typtypmod)
                      WHEN 'e' THEN 'enum' WHEN 'r' THEN 'range' WHEN 'c' THEN 'composite'
                      ELSE 'base type' END
  FROM pg_catalog.pg_type t JOIN scanned s ON s.oid = t.typnamespace
 WHERE t.typtype IN ('b', 'c', 'd', 'e', 'r')
   AND t.typcategory <> 'A'  -- array types go with their element type
   AND (t.typrelid = 0 OR (SELECT c.relkind FROM pg_catalog.pg_class c
                            WHERE c.oid = t.typrelid) = 'c')  -- not a table's row type
   AND NOT EXISTS (SELECT 1 FROM members m WHERE m.classid = 'pg_catalog.pg_type'::pg_catalog.regclass
                                             AND m.objid = t.oid)
UNION ALL
SELECT r.rulename || ' ON ' || r.ev_class::pg_catalog.regclass::text, 'rule',
       pg_catalog.pg_get_userbyid(c.relowner), pg_catalog.pg_get_ruledef(r.oid)
  FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
  JOIN scanned s ON s.oid = c.relnamespace
 WHERE r.rulename <> '_RETURN'
UNION ALL
SELECT e.evtname, 'event trigger', pg_catalog.pg_get_userbyid(e.evtowner),
       'ON ' || e.evtevent || ' EXECUTE FUNCTION ' || e.evtfoid::pg_catalog.regprocedure::text
  FROM pg_catalog.pg_event_trigger e
 WHERE NOT EXISTS (SELECT 1 FROM members m
                    WHERE m.classid = 'pg_catalog.pg_event_trigger'::pg_catalog.regclass
                      AND m.objid = e.oid)
"""


def _read_other_objects(conn: Conn, declared_schemas: list[str], live: SecurityState) -> None:
    for name, kind, owner, definition in conn.execute(
        _OTHER_OBJECTS, {"declared": declared_schemas}
    ).fetchall():
        live.other_objects[str(name)] = ObjectSpec(
            str(name), str(kind), str(owner), " ".join(str(definition or "").split())
        )
