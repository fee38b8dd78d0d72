"""The application login with hostile SQL: it runs no code as another role, keeps nothing
past its transaction on a pooled connection, and stores nothing outside RLS.

Every attack here is one that worked against revision 0006 (docs/threat-model.md).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from chatsec.app import PoolSettings, create_app_engine, user_transaction
from chatsec.app.chat import post_message
from chatsec.db.connect import connect
from chatsec.keys.keyring import Keyring
from chatsec.migrate import runner
from chatsec.queries import message_history, thread_list
from tests.chat_fixtures import TEST_KEY, SeededChat, prepare_writer
from tests.conftest import ChatDB, identity_token, set_identity
from tests.hostile_support import (
    ESCAPE_MARK,
    SPY_MARK,
    Conn,
    collect_notices,
    extra_app_login,
    shadow_everything,
)


def _act(conn: Conn, user: uuid.UUID | None) -> None:
    set_identity(conn, user)
    prepare_writer(conn)


# Every function app_user may execute, called with real arguments. The test asserts
# this covers them all, so a new function cannot escape the shadowing attack.
_CALLS = {
    "chat.current_user_id()": "SELECT chat.current_user_id()",
    "chat.my_thread_ids()": "SELECT * FROM chat.my_thread_ids()",
    "chat.my_admin_thread_ids()": "SELECT * FROM chat.my_admin_thread_ids()",
    "chat.my_claimable_thread_ids()": "SELECT * FROM chat.my_claimable_thread_ids()",
    "chat.my_memberships()": "SELECT * FROM chat.my_memberships()",
    "chat.my_thread_counts(uuid[])": "SELECT * FROM chat.my_thread_counts(ARRAY[%(t)s]::pg_catalog.uuid[])",
    "chat.decrypt_message(text,text,uuid,uuid)": (
        "SELECT chat.decrypt_message(content, key_id, id, thread_id) FROM chat.messages"
    ),
}


def _workload(conn: Conn, chat: SeededChat) -> None:
    """Everything the application login can make the server run: every function it may
    call, every trigger and policy of every table it may write, the shipped views."""
    new_user, new_thread, new_message = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    p = {"t": chat.t, "bob": chat.bob, "am": chat.alice_msg, "nm": new_message}
    _act(conn, chat.alice)
    for statement in _CALLS.values():
        conn.execute(statement, p).fetchall()
    for relation in (
        "users",
        "user_profiles",
        "threads",
        "thread_participants",
        "messages",
        "messages_decrypted",
        "attachments",
        "encryption_keys",
        "deployment",
    ):
        conn.execute(f"SELECT * FROM chat.{relation}").fetchall()
    conn.execute(
        "INSERT INTO chat.messages (id, thread_id, user_id, content) "
        "VALUES (%(nm)s, %(t)s, chat.current_user_id(), 'hello')",
        p,
    )
    conn.execute("UPDATE chat.messages SET content = 'edited' WHERE id = %(am)s", p)
    conn.execute(
        "INSERT INTO chat.attachments (message_id, file_name, content_type, byte_size, "
        "storage_key) VALUES (%(nm)s, 'f', 'text/plain', 1, gen_random_uuid()::pg_catalog.text)",
        p,
    )
    conn.execute("DELETE FROM chat.attachments WHERE message_id = %(nm)s", p)
    conn.execute("UPDATE chat.threads SET name = 'renamed' WHERE id = %(t)s", p)
    conn.execute(
        "UPDATE chat.thread_participants SET last_read_at = now() WHERE user_id = chat.current_user_id()"
    )
    conn.execute(
        "UPDATE chat.thread_participants SET role = 'owner' WHERE thread_id = %(t)s AND user_id = %(bob)s",
        p,
    )
    # Fires the owner trigger (bob stays owner, so alice may step down).
    conn.execute(
        "UPDATE chat.thread_participants SET role = 'member' "
        "WHERE thread_id = %(t)s AND user_id = chat.current_user_id()",
        p,
    )
    conn.execute("DELETE FROM chat.messages WHERE id = %(nm)s", p)
    _act(conn, new_user)
    conn.execute(
        "INSERT INTO chat.users (id, email, username) VALUES (chat.current_user_id(), %s, %s)",
        (f"{new_user}@example.com", f"u_{new_user.hex[:12]}"),
    )
    conn.execute(
        "INSERT INTO chat.threads (id, name, created_by) VALUES (%s, 'n', chat.current_user_id())",
        (new_thread,),
    )
    conn.execute(
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
        "VALUES (%s, chat.current_user_id(), 'owner')",
        (new_thread,),
    )
    conn.execute("UPDATE chat.users SET first_name = 'N' WHERE id = chat.current_user_id()")


def test_the_workload_calls_every_function_app_user_may_execute(shared_deployed_db: ChatDB) -> None:
    with connect(shared_deployed_db.admin) as conn:
        callable_ = {
            str(r[0])
            for r in conn.execute(
                "SELECT p.oid::regprocedure::text FROM pg_proc p "
                "JOIN pg_namespace n ON n.oid = p.pronamespace "
                "WHERE n.nspname = 'chat' AND p.prorettype <> 'trigger'::regtype "
                "AND has_function_privilege('app_user', p.oid, 'EXECUTE')"
            )
        }
    assert callable_ == set(_CALLS)


def test_no_function_runs_the_callers_code_as_another_role(
    shared_deployed_db: ChatDB, chat: SeededChat
) -> None:
    # TEMPORARY is revoked from the application (test_app_login_cannot_create_...);
    # this login gets it back, as a drifted deployment might, to show that the functions
    # themselves cannot be made to run a caller's domain or view as their owner.
    with extra_app_login(shared_deployed_db, temporary=True) as url, connect(url) as conn:
        notices = collect_notices(conn)
        types, relations = shadow_everything(conn, "escaped")
        assert {"uuid", "text", "jsonb", "timestamptz", "bool", "int8", "varchar"} <= types
        assert {"users", "threads", "thread_participants", "messages", "encryption_keys"} <= (
            relations
        )
        assert {"pg_class", "pg_settings", "pg_roles"} <= relations
        _workload(conn, chat)
        escaped_as = conn.execute("SELECT current_setting('chatsec_test.escaped_as', true)")
        row = escaped_as.fetchone()
        conn.rollback()
    assert [n for n in notices if ESCAPE_MARK in n] == []
    assert row is not None and not row[0]


def test_the_shadowing_detector_sees_the_0006_escape(empty_db: ChatDB) -> None:
    # The attack of the issue against the last revision before the hardening: the
    # detector above must see it, or the test above proves nothing.
    runner.deploy(empty_db.migrator, "0006")
    with empty_db.sandbox.admin_connect(empty_db.name) as admin:
        admin.execute(f'GRANT TEMPORARY ON DATABASE "{empty_db.name}" TO app_user')
    with connect(empty_db.app) as conn:
        notices = collect_notices(conn)
        shadow_everything(conn, "escaped")
        _act(conn, uuid.uuid4())
        conn.execute("SELECT * FROM chat.my_thread_ids()").fetchall()
        conn.rollback()
    assert f"{ESCAPE_MARK} as chat_owner" in notices


def test_app_login_cannot_create_anything_that_outlives_its_transaction(
    shared_deployed_db: ChatDB,
) -> None:
    attempts = [
        "CREATE TEMPORARY TABLE stash (x text)",
        "CREATE TEMPORARY VIEW messages AS SELECT 1 AS x",
        "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
        "CREATE DOMAIN pg_temp.uuid AS pg_catalog.uuid",
        "CREATE TABLE public.stash (x text)",
        "CREATE TABLE chat.stash (x text)",
        "CREATE TABLE extensions.stash (x text)",
        "CREATE SCHEMA stash",
    ]
    with connect(shared_deployed_db.app) as conn:
        for statement in attempts:
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(statement)
        conn.rollback()


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT lo_create(0)",
        "SELECT lo_creat(-1)",
        "SELECT lo_from_bytea(0, 'stash'::bytea)",
        "SELECT lo_put(1, 0, 'x'::bytea)",
        "SELECT lo_get(1)",
        "SELECT lo_open(1, 262144)",
        "SELECT lo_unlink(1)",
    ],
)
def test_large_objects_are_closed_to_the_app_login(
    shared_deployed_db: ChatDB, statement: str
) -> None:
    with connect(shared_deployed_db.app) as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        conn.rollback()


def test_no_large_object_function_is_executable_by_app_user(shared_deployed_db: ChatDB) -> None:
    with connect(shared_deployed_db.admin) as conn:
        open_ = conn.execute(
            "SELECT p.oid::regprocedure::text FROM pg_proc p "
            "WHERE p.pronamespace = 'pg_catalog'::regnamespace "
            "AND (p.proname LIKE 'lo\\_%%' OR p.proname IN ('loread', 'lowrite')) "
            "AND has_function_privilege('app_user', p.oid, 'EXECUTE')"
        ).fetchall()
    assert open_ == []


# -- a pooled connection: nothing one request leaves in its session reaches the next --


@pytest.fixture()
def keyring(chat: SeededChat, tmp_path: Path) -> Keyring:
    # The key the seeded chat was written with (registered by seed_chat), never saved.
    return Keyring(tmp_path / "keyring.json", [TEST_KEY])


@pytest.fixture()
def one_connection(shared_deployed_db: ChatDB) -> Iterator[sa.Engine]:
    engine = create_app_engine(
        shared_deployed_db.app.libpq, pool=PoolSettings(max_connections=1, prepare_threshold=0)
    )
    yield engine
    engine.dispose()


# What an attacker sets for its session or its role, and what every request must see.
PINNED = {
    "log_parameter_max_length_on_error": ("-1", "0"),
    "debug_print_plan": ("on", "off"),
    "default_transaction_read_only": ("on", "off"),
    "statement_timeout": ("1", "0"),
    "search_path": ("public", "chat"),
}


def _shown(conn: sa.Connection) -> dict[str, str]:
    return {name: str(conn.execute(sa.text(f"SHOW {name}")).scalar_one()) for name in PINNED}


def _pid(conn: sa.Connection) -> int:
    return int(conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one())


def test_a_with_hold_cursor_never_reaches_the_next_request(
    one_connection: sa.Engine, chat: SeededChat, keyring: Keyring
) -> None:
    with user_transaction(one_connection, chat.alice, keyring) as conn:
        pid = _pid(conn)
        conn.execute(
            sa.text("DECLARE stash CURSOR WITH HOLD FOR SELECT content FROM messages_decrypted")
        )
    with user_transaction(one_connection, chat.carol, keyring) as conn:
        assert _pid(conn) == pid
        with pytest.raises(sa.exc.ProgrammingError, match="stash"):
            conn.execute(sa.text("FETCH ALL FROM stash"))


def test_session_settings_never_reach_the_next_request(
    one_connection: sa.Engine, chat: SeededChat
) -> None:
    with one_connection.begin() as conn:
        pid = _pid(conn)
        for name, (evil, _) in PINNED.items():
            conn.execute(sa.text(f"SET {name} = {evil}"))
        conn.execute(sa.text("SET row_security = off"))
        token = identity_token(chat.bob)
        conn.execute(sa.text("SELECT set_config('app.identity', :t, false)"), {"t": token})
        conn.execute(sa.text("LISTEN chatsec_stash"))
        conn.execute(sa.text("SELECT pg_advisory_lock(42)"))
    with user_transaction(one_connection, chat.carol) as conn:
        assert _pid(conn) == pid
        assert _shown(conn) == {name: good for name, (_, good) in PINNED.items()}
        assert conn.execute(sa.text("SHOW row_security")).scalar_one() == "on"
        assert conn.execute(sa.text("SELECT pg_listening_channels()")).all() == []
        locks = conn.execute(
            sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = :p"),
            {"p": pid},
        ).scalar_one()
        assert locks == 0
    # Without an identity of its own, a transaction has none (not bob's, left behind).
    with one_connection.begin() as conn:
        assert conn.execute(sa.text("SELECT chat.current_user_id()")).scalar_one() is None


def test_a_redefined_prepared_statement_never_runs_for_the_next_request(
    one_connection: sa.Engine, chat: SeededChat
) -> None:
    query = sa.text("SELECT count(*) FROM chat.thread_participants")
    with user_transaction(one_connection, chat.alice) as conn:
        assert conn.execute(query).scalar_one() == 2
    # The attacker's request finds the driver's statement by its text and redefines it.
    with one_connection.begin() as conn:
        name = conn.execute(
            sa.text(
                "SELECT name FROM pg_prepared_statements "
                "WHERE statement = 'SELECT count(*) FROM chat.thread_participants'"
            )
        ).scalar_one()
        conn.execute(sa.text(f'DEALLOCATE "{name}"'))
        conn.execute(sa.text(f'PREPARE "{name}" AS SELECT 424242::bigint'))
    with user_transaction(one_connection, chat.alice) as conn:
        assert conn.execute(query).scalar_one() == 2
    # Only deallocated: the driver still finds a statement to execute.
    with one_connection.begin() as conn:
        for (name,) in conn.execute(sa.text("SELECT name FROM pg_prepared_statements")).all():
            conn.execute(sa.text(f'DEALLOCATE "{name}"'))
    with user_transaction(one_connection, chat.alice) as conn:
        assert conn.execute(query).scalar_one() == 2


def test_untouched_prepared_statements_survive_between_requests(
    one_connection: sa.Engine, chat: SeededChat
) -> None:
    query = sa.text("SELECT count(*) FROM chat.thread_participants")
    listed = sa.text("SELECT name, statement FROM pg_prepared_statements")
    with user_transaction(one_connection, chat.alice) as conn:
        conn.execute(query).scalar_one()
        before = {str(s): str(n) for n, s in conn.execute(listed).all()}
    with user_transaction(one_connection, chat.bob) as conn:
        after = {str(s): str(n) for n, s in conn.execute(listed).all()}
    statement = "SELECT count(*) FROM chat.thread_participants"
    assert statement in before and after.get(statement) == before[statement]


def test_a_temporary_view_or_domain_never_reaches_the_next_request(
    shared_deployed_db: ChatDB, chat: SeededChat, keyring: Keyring
) -> None:
    # With TEMPORARY given back to the login (drift), what one request creates is
    # still gone before the next: a view named like a chat table that unqualified
    # names would resolve to, and domains the encryption trigger would compile against.
    with extra_app_login(shared_deployed_db, temporary=True) as url:
        engine = create_app_engine(url.libpq, pool=PoolSettings(max_connections=1))
        try:
            with engine.begin() as conn:
                raw = conn.connection.driver_connection
                assert isinstance(raw, psycopg.Connection)
                shadow_everything(raw, "spy")
                conn.execute(sa.text("DROP VIEW pg_temp.threads"))
                conn.execute(
                    sa.text("CREATE TEMPORARY VIEW threads AS SELECT 'hijacked'::text AS name")
                )
            with user_transaction(engine, chat.alice, keyring) as conn:
                raw = conn.connection.driver_connection
                assert isinstance(raw, psycopg.Connection)
                notices = collect_notices(raw)
                assert conn.execute(sa.text("SELECT name FROM threads")).scalars().all() == ["t"]
                message = post_message(conn, chat.t, "after the attack")
                stored = conn.execute(
                    sa.text("SELECT content, key_id FROM chat.messages WHERE id = :m"),
                    {"m": message},
                ).one()
                thread_list(conn)
                message_history(conn, chat.t)
                temp_objects = conn.execute(
                    sa.text(
                        "SELECT count(*) FROM pg_class c WHERE c.relnamespace = pg_my_temp_schema()"
                    )
                ).scalar_one()
                conn.rollback()
        finally:
            engine.dispose()
    assert [n for n in notices if SPY_MARK in n] == []
    assert str(stored.content).startswith("-----BEGIN PGP MESSAGE-----")
    assert stored.key_id == keyring.active.id
    assert temp_objects == 0


def test_role_defaults_set_by_the_login_itself_do_not_change_its_sessions(
    shared_deployed_db: ChatDB, chat: SeededChat, caplog: pytest.LogCaptureFixture
) -> None:
    with extra_app_login(shared_deployed_db) as url:
        with connect(url, autocommit=True) as attacker:
            for name, (evil, _) in PINNED.items():
                attacker.execute(f"ALTER ROLE CURRENT_USER SET {name} = {evil}")
            attacker.execute("ALTER ROLE CURRENT_USER SET enable_seqscan = off")
        engine = create_app_engine(url.libpq)
        try:
            with (
                caplog.at_level(logging.WARNING, logger="chatsec.app"),
                user_transaction(engine, chat.alice) as conn,
            ):
                shown = _shown(conn)
                # Writes still work: the session is not read-only, not timed out.
                conn.execute(
                    sa.text("UPDATE chat.users SET first_name = 'A' WHERE id = :a"),
                    {"a": chat.alice},
                )
                conn.rollback()
        finally:
            engine.dispose()
    assert shown == {name: good for name, (_, good) in PINNED.items()}
    # What is not pinned is reported, naming the setting.
    assert any("enable_seqscan" in r.getMessage() for r in caplog.records)
