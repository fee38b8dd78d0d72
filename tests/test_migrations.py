"""The schema revisions against a real database: head, stairway, single head, offline SQL."""

from __future__ import annotations

import psycopg
import pytest

from chatsec.db.connect import connect
from chatsec.migrate import runner
from tests.chat_fixtures import prepare_writer
from tests.conftest import ChatDB

CHAT_TABLES = {"users", "threads", "thread_participants", "messages", "attachments"}


def _tables(db: ChatDB) -> dict[str, str]:
    with connect(db.admin) as conn:
        rows = conn.execute(
            "SELECT c.relname, pg_get_userbyid(c.relowner) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'chat' AND c.relkind = 'r'"
        ).fetchall()
    return {str(name): str(owner) for name, owner in rows}


def test_single_head() -> None:
    assert len(runner.script_directory().get_heads()) == 1


def test_upgrade_to_head_lays_down_the_schema_owned_by_the_nologin_owner(empty_db: ChatDB) -> None:
    runner.deploy(empty_db.migrator)
    state = runner.status(empty_db.migrator)
    assert state.up_to_date and state.current == state.heads
    tables = _tables(empty_db)
    assert set(tables) >= CHAT_TABLES
    # Every table is chat_owner's but the identity keys: only their verifier's role reads them.
    assert {t: o for t, o in tables.items() if o != "chat_owner"} == {
        "identity_keys": "chat_identity"
    }
    with connect(empty_db.admin) as conn:
        indexes = {
            str(r[0])
            for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = 'chat'")
        }
        assert {
            "idx_messages_thread",
            "idx_messages_user",
            "idx_messages_parent",
            "idx_messages_metadata",
            "idx_users_email",
            "idx_users_username",
            "idx_threads_last_message",
            "idx_thread_participants_user",
            "idx_attachments_message",
        } <= indexes
        gin = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_messages_metadata'"
        ).fetchone()
        assert gin is not None and "USING gin" in str(gin[0])
        # Only the owner may create in the chat schema.
        creators = conn.execute(
            "SELECT r.rolname FROM pg_roles r WHERE has_schema_privilege(r.oid, 'chat', 'CREATE') "
            "AND NOT r.rolsuper"
        ).fetchall()
        assert {str(r[0]) for r in creators} <= {"chat_owner", "chatsec_migrator"}
        exts = {str(r[0]) for r in conn.execute("SELECT extname FROM pg_extension")}
        assert {"pgcrypto", "uuid-ossp"} <= exts


def test_updated_at_is_maintained_by_the_database(deployed_db: ChatDB) -> None:
    with connect(deployed_db.admin) as conn:
        conn.execute(
            "INSERT INTO chat.users (email, username, updated_at) "
            "VALUES ('u@example.com', 'u', now() - interval '1 day')"
        )
        conn.execute("UPDATE chat.users SET first_name = 'U' WHERE username = 'u'")
        age = conn.execute(
            "SELECT now() - updated_at FROM chat.users WHERE username = 'u'"
        ).fetchone()
        assert age is not None and age[0].total_seconds() < 60


def test_parent_must_be_in_the_same_thread(deployed_db: ChatDB) -> None:
    with connect(deployed_db.admin) as conn:
        prepare_writer(conn)
        uid = conn.execute(
            "INSERT INTO chat.users (email, username) VALUES ('p@example.com', 'p') RETURNING id"
        ).fetchone()
        t1 = conn.execute("INSERT INTO chat.threads (name) VALUES ('a') RETURNING id").fetchone()
        t2 = conn.execute("INSERT INTO chat.threads (name) VALUES ('b') RETURNING id").fetchone()
        assert uid and t1 and t2
        parent = conn.execute(
            "INSERT INTO chat.messages (thread_id, user_id, content) VALUES (%s, %s, 'x') RETURNING id",
            (t1[0], uid[0]),
        ).fetchone()
        assert parent
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "INSERT INTO chat.messages (thread_id, user_id, content, parent_id) "
                "VALUES (%s, %s, 'y', %s)",
                (t2[0], uid[0], parent[0]),
            )
        conn.rollback()


def test_stairway_every_revision_up_down_up(empty_db: ChatDB) -> None:
    scripts = runner.script_directory()
    revisions = [r.revision for r in reversed(list(scripts.walk_revisions()))]
    previous = "base"
    for rev in revisions:
        runner.deploy(empty_db.migrator, rev)
        runner.rollback(empty_db.migrator, previous)
        assert runner.status(empty_db.migrator).current == (
            () if previous == "base" else (previous,)
        )
        runner.deploy(empty_db.migrator, rev)
        assert runner.status(empty_db.migrator).current == (rev,)
        previous = rev
    runner.rollback(empty_db.migrator, "base")
    assert not (CHAT_TABLES & set(_tables(empty_db)))


def test_offline_sql_renders_without_a_connection() -> None:
    text = runner.offline_sql()
    assert "CREATE TABLE chat.messages" in text
    assert "ENABLE ROW LEVEL SECURITY" in text
    assert "alembic_version" in text
