"""Tools for the attacks of the application login: detectors, extra logins, shadow objects."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from chatsec.db.url import DatabaseURL
from tests.conftest import ChatDB

Conn = psycopg.Connection[tuple[object, ...]]

ESCAPE_MARK = "chatsec-escape"
SPY_MARK = "chatsec-spy"

# Runs wherever a shadow object makes the server call it. `escaped` reports code that
# runs as another role than the attacker's login (a definer's owner); `spy` reports
# any call, for code that must not run inside another request's transaction at all.
DETECTORS = [
    f"""
    CREATE FUNCTION pg_temp.escaped(v anyelement) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
      IF current_user <> session_user THEN
        RAISE NOTICE '{ESCAPE_MARK} as %', current_user;
        PERFORM set_config('chatsec_test.escaped_as', current_user, false);
      END IF;
      RETURN true;
    END $$
    """,
    f"""
    CREATE FUNCTION pg_temp.spy(v anyelement) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
      RAISE NOTICE '{SPY_MARK} in a transaction of %',
        coalesce(current_setting('app.identity', true), '<nobody>');
      RETURN true;
    END $$
    """,
]

# Every base, enum, range and multirange type of pg_catalog that a domain can wrap.
_CATALOG_TYPES = """
SELECT t.typname FROM pg_catalog.pg_type t
 WHERE t.typnamespace = 'pg_catalog'::regnamespace AND t.typtype IN ('b', 'e', 'r', 'm')
   AND t.typname NOT LIKE '\\_%' AND t.typisdefined
 ORDER BY 1
"""
# Every relation a function could name: the chat schemas' and the catalog's.
_RELATIONS = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname IN ('chat', 'extensions', 'pg_catalog') AND c.relkind IN ('r', 'v', 'm', 'p')
 ORDER BY 1, 2
"""


def collect_notices(conn: Conn) -> list[str]:
    notices: list[str] = []
    conn.add_notice_handler(lambda d: notices.append(d.message_primary or ""))
    return notices


def shadow_everything(conn: Conn, detector: str = "escaped") -> tuple[set[str], set[str]]:
    """In the caller's open transaction, shadow every type and relation name with
    temporary objects that call `detector`; the (types, relations) shadowed."""
    for statement in DETECTORS:
        conn.execute(statement)
    types: set[str] = set()
    for (name,) in conn.execute(_CATALOG_TYPES).fetchall():
        stmt = sql.SQL(
            "CREATE DOMAIN pg_temp.{} AS pg_catalog.{} CHECK (pg_temp.{}(VALUE))"
        ).format(sql.Identifier(str(name)), sql.Identifier(str(name)), sql.Identifier(detector))
        try:
            with conn.transaction():
                conn.execute(stmt)
            types.add(str(name))
        except psycopg.Error:
            pass  # a type no domain can wrap (or one the login may not use)
    relations: set[str] = set()
    for schema, name in conn.execute(_RELATIONS).fetchall():
        if str(name) in relations:
            continue
        stmt = sql.SQL(
            "CREATE TEMPORARY VIEW {} AS SELECT * FROM {}.{} WHERE pg_temp.{}(true)"
        ).format(
            sql.Identifier(str(name)),
            sql.Identifier(str(schema)),
            sql.Identifier(str(name)),
            sql.Identifier(detector),
        )
        try:
            with conn.transaction():
                conn.execute(stmt)
            relations.add(str(name))
        except psycopg.Error:
            pass
    return types, relations


@contextmanager
def extra_app_login(db: ChatDB, temporary: bool = False) -> Iterator[DatabaseURL]:
    """A login of its own in app_user (role settings are cluster-wide: nothing leaks
    into the shared application login), dropped afterwards. `temporary` grants it
    TEMPORARY on `db`, as a drifted deployment might."""
    name = f"t_app_{secrets.token_hex(4)}"
    password = secrets.token_urlsafe(18)
    with db.sandbox.admin_connect() as conn:
        verifier = conn.pgconn.encrypt_password(
            password.encode(), name.encode(), b"scram-sha-256"
        ).decode()
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {} IN ROLE app_user").format(
                sql.Identifier(name), sql.Literal(verifier)
            )
        )
        if temporary:
            conn.execute(
                sql.SQL("GRANT TEMPORARY ON DATABASE {} TO {}").format(
                    sql.Identifier(db.name), sql.Identifier(name)
                )
            )
    base = db.app
    url = DatabaseURL(name, password, base.host, base.port, db.name, dict(base.query))
    try:
        yield url
    finally:
        with db.sandbox.admin_connect() as conn:
            # Its sessions first: DROP ROLE refuses while one is connected.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                (name,),
            )
            if temporary:
                conn.execute(
                    sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM {}").format(
                        sql.Identifier(db.name), sql.Identifier(name)
                    )
                )
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))
