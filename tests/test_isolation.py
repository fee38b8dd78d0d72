"""The isolation matrix: every table and command, as a member, a non-member and no identity.

Runs as the application login (a member of app_user) against a deployed database.
Every case runs in a transaction that is rolled back, so cases cannot affect each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from chatsec.db.connect import connect
from tests.chat_fixtures import SeededChat, prepare_writer
from tests.conftest import ChatDB, set_identity

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture()
def app(shared_deployed_db: ChatDB) -> Iterator[Conn]:
    with connect(shared_deployed_db.app) as conn:
        yield conn
        conn.rollback()


@dataclass(frozen=True)
class Case:
    id: str
    actor: str | None  # alice, bob, carol, or None for no identity
    sql: str
    # rows returned/affected, "denied" (privilege or policy), "fk" (constraint),
    # "no-column" (a private column is not there), "no-owner" (the last owner would go)
    expect: int | str


def _params(chat: SeededChat) -> dict[str, object]:
    return {
        "alice": chat.alice,
        "bob": chat.bob,
        "carol": chat.carol,
        "t": chat.t,
        "u": chat.u,
        "am": chat.alice_msg,
        "bm": chat.bob_msg,
        "cm": chat.carol_msg,
        "aa": chat.alice_attachment,
        "new": uuid.uuid4(),
        "new2": uuid.uuid4(),
    }


CASES = [
    # users: one's own row only; the public profiles of people one shares a thread with
    Case("users-select-member", "alice", "SELECT id FROM chat.users", 1),
    Case("users-select-nonmember", "carol", "SELECT id FROM chat.users", 1),
    Case("users-select-noid", None, "SELECT id FROM chat.users", 0),
    Case("users-contact-email", "alice", "SELECT email FROM chat.users WHERE id = %(bob)s", 0),
    Case("profiles-select-member", "alice", "SELECT id FROM chat.user_profiles", 2),
    Case("profiles-select-nonmember", "carol", "SELECT id FROM chat.user_profiles", 1),
    Case("profiles-select-noid", None, "SELECT id FROM chat.user_profiles", 0),
    Case(
        "profiles-contact",
        "bob",
        "SELECT username, first_name, last_name, profile_image FROM chat.user_profiles "
        "WHERE id = %(alice)s",
        1,
    ),
    Case("profiles-stranger", "alice", "SELECT id FROM chat.user_profiles WHERE id = %(carol)s", 0),
    Case("profiles-no-email", "alice", "SELECT email FROM chat.user_profiles", "no-column"),
    Case(
        "profiles-no-last-login",
        "alice",
        "SELECT last_login_at, is_active, created_at FROM chat.user_profiles",
        "no-column",
    ),
    Case(
        "profiles-insert",
        "alice",
        "INSERT INTO chat.user_profiles (id, username) VALUES (%(new)s, 'x')",
        "denied",
    ),
    Case(
        "users-insert-for-another-id",
        "alice",
        "INSERT INTO chat.users (id, email, username) VALUES (%(new)s, 'n@x', 'n')",
        "denied",
    ),
    Case(
        "users-insert-new-identity",
        "new",
        "INSERT INTO chat.users (id, email, username) VALUES (%(new)s, 'n@x', 'n')",
        1,
    ),
    Case(
        "users-insert-other-id",
        "alice",
        "INSERT INTO chat.users (id, email, username) VALUES (%(new2)s, 'n@x', 'n')",
        "denied",
    ),
    Case(
        "users-insert-noid",
        None,
        "INSERT INTO chat.users (id, email, username) VALUES (%(new)s, 'n@x', 'n')",
        "denied",
    ),
    Case(
        "users-update-own",
        "alice",
        "UPDATE chat.users SET first_name = 'A' WHERE id = %(alice)s",
        1,
    ),
    Case(
        "users-update-contact",
        "alice",
        "UPDATE chat.users SET first_name = 'B' WHERE id = %(bob)s",
        0,
    ),
    Case(
        "users-update-stranger",
        "alice",
        "UPDATE chat.users SET first_name = 'C' WHERE id = %(carol)s",
        0,
    ),
    Case("users-update-noid", None, "UPDATE chat.users SET first_name = 'X'", 0),
    Case(
        "users-update-id",
        "alice",
        "UPDATE chat.users SET id = %(new)s WHERE id = %(alice)s",
        "denied",
    ),
    Case("users-delete", "alice", "DELETE FROM chat.users WHERE id = %(alice)s", "denied"),
    # threads: participants only
    Case("threads-select-member", "bob", "SELECT id FROM chat.threads", 1),
    Case("threads-select-nonmember", "carol", "SELECT id FROM chat.threads WHERE id = %(t)s", 0),
    Case("threads-select-noid", None, "SELECT id FROM chat.threads", 0),
    Case(
        "threads-insert-creator",
        "bob",
        "INSERT INTO chat.threads (id, name, created_by) VALUES (%(new)s, 'n', %(bob)s)",
        1,
    ),
    Case(
        "threads-insert-spoofed-creator",
        "bob",
        "INSERT INTO chat.threads (id, name, created_by) VALUES (%(new)s, 'n', %(alice)s)",
        "denied",
    ),
    Case(
        "threads-insert-noid",
        None,
        "INSERT INTO chat.threads (id, name, created_by) VALUES (%(new)s, 'n', %(bob)s)",
        "denied",
    ),
    Case("threads-rename-owner", "alice", "UPDATE chat.threads SET name = 'r' WHERE id = %(t)s", 1),
    Case(
        "threads-archive-owner",
        "alice",
        "UPDATE chat.threads SET is_archived = true WHERE id = %(t)s",
        1,
    ),
    Case("threads-rename-member", "bob", "UPDATE chat.threads SET name = 'r' WHERE id = %(t)s", 0),
    Case(
        "threads-rename-nonmember",
        "carol",
        "UPDATE chat.threads SET name = 'r' WHERE id = %(t)s",
        0,
    ),
    Case("threads-delete", "alice", "DELETE FROM chat.threads WHERE id = %(t)s", "denied"),
    # thread_participants
    Case("participants-select-member", "bob", "SELECT user_id FROM chat.thread_participants", 2),
    Case(
        "participants-select-nonmember",
        "carol",
        "SELECT user_id FROM chat.thread_participants WHERE thread_id = %(t)s",
        0,
    ),
    Case("participants-select-noid", None, "SELECT user_id FROM chat.thread_participants", 0),
    Case(
        "participants-owner-adds",
        "alice",
        "INSERT INTO chat.thread_participants (thread_id, user_id) VALUES (%(t)s, %(carol)s)",
        1,
    ),
    Case(
        "participants-member-adds",
        "bob",
        "INSERT INTO chat.thread_participants (thread_id, user_id) VALUES (%(t)s, %(carol)s)",
        "denied",
    ),
    Case(
        "participants-join-by-inserting-self",
        "carol",
        "INSERT INTO chat.thread_participants (thread_id, user_id) VALUES (%(t)s, %(carol)s)",
        "denied",
    ),
    Case(
        "participants-claim-others-thread",
        "carol",
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
        "VALUES (%(t)s, %(carol)s, 'owner')",
        "denied",
    ),
    Case(
        "participants-insert-noid",
        None,
        "INSERT INTO chat.thread_participants (thread_id, user_id) VALUES (%(t)s, %(carol)s)",
        "denied",
    ),
    Case(
        "participants-owner-promotes",
        "alice",
        "UPDATE chat.thread_participants SET role = 'admin' WHERE thread_id = %(t)s AND user_id = %(bob)s",
        1,
    ),
    Case(
        "participants-owner-adds-owner",
        "alice",
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
        "VALUES (%(t)s, %(carol)s, 'owner')",
        1,
    ),
    Case(
        "participants-owner-adds-admin",
        "alice",
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
        "VALUES (%(t)s, %(carol)s, 'admin')",
        1,
    ),
    Case(
        "participants-last-owner-leaves",
        "alice",
        "DELETE FROM chat.thread_participants WHERE thread_id = %(t)s AND user_id = %(alice)s",
        "no-owner",
    ),
    Case(
        "participants-last-owner-steps-down",
        "alice",
        "UPDATE chat.thread_participants SET role = 'member' "
        "WHERE thread_id = %(t)s AND user_id = %(alice)s",
        "no-owner",
    ),
    Case(
        "participants-self-promotion",
        "bob",
        "UPDATE chat.thread_participants SET role = 'owner' WHERE thread_id = %(t)s AND user_id = %(bob)s",
        "denied",
    ),
    Case(
        "participants-mark-read",
        "bob",
        "UPDATE chat.thread_participants SET last_read_at = now() "
        "WHERE thread_id = %(t)s AND user_id = %(bob)s",
        1,
    ),
    Case(
        "participants-nonmember-update",
        "carol",
        "UPDATE chat.thread_participants SET last_read_at = now() WHERE thread_id = %(t)s",
        0,
    ),
    Case(
        "participants-member-leaves",
        "bob",
        "DELETE FROM chat.thread_participants WHERE thread_id = %(t)s AND user_id = %(bob)s",
        1,
    ),
    Case(
        "participants-member-removes-owner",
        "bob",
        "DELETE FROM chat.thread_participants WHERE thread_id = %(t)s AND user_id = %(alice)s",
        0,
    ),
    Case(
        "participants-owner-removes-member",
        "alice",
        "DELETE FROM chat.thread_participants WHERE thread_id = %(t)s AND user_id = %(bob)s",
        1,
    ),
    Case(
        "participants-nonmember-delete",
        "carol",
        "DELETE FROM chat.thread_participants WHERE thread_id = %(t)s",
        0,
    ),
    Case("participants-delete-noid", None, "DELETE FROM chat.thread_participants", 0),
    # messages
    Case("messages-select-member", "bob", "SELECT id FROM chat.messages", 2),
    Case(
        "messages-select-nonmember",
        "carol",
        "SELECT id FROM chat.messages WHERE thread_id = %(t)s",
        0,
    ),
    Case("messages-select-noid", None, "SELECT id FROM chat.messages", 0),
    Case(
        "messages-insert-self",
        "bob",
        "INSERT INTO chat.messages (id, thread_id, user_id, content) "
        "VALUES (%(new)s, %(t)s, %(bob)s, 'hi')",
        1,
    ),
    Case(
        "messages-insert-spoofed-author",
        "bob",
        "INSERT INTO chat.messages (id, thread_id, user_id, content) "
        "VALUES (%(new)s, %(t)s, %(alice)s, 'hi')",
        "denied",
    ),
    Case(
        "messages-insert-nonmember",
        "carol",
        "INSERT INTO chat.messages (id, thread_id, user_id, content) "
        "VALUES (%(new)s, %(t)s, %(carol)s, 'hi')",
        "denied",
    ),
    Case(
        "messages-insert-noid",
        None,
        "INSERT INTO chat.messages (id, thread_id, user_id, content) "
        "VALUES (%(new)s, %(t)s, %(bob)s, 'hi')",
        "denied",
    ),
    Case(
        "messages-reply-across-threads",
        "carol",
        "INSERT INTO chat.messages (id, thread_id, user_id, content, parent_id) "
        "VALUES (%(new)s, %(u)s, %(carol)s, 'hi', %(am)s)",
        "fk",
    ),
    Case(
        "messages-edit-own", "alice", "UPDATE chat.messages SET content = 'e' WHERE id = %(am)s", 1
    ),
    Case(
        "messages-edit-others", "bob", "UPDATE chat.messages SET content = 'e' WHERE id = %(am)s", 0
    ),
    Case(
        "messages-edit-nonmember",
        "carol",
        "UPDATE chat.messages SET content = 'e' WHERE id = %(am)s",
        0,
    ),
    Case(
        "messages-move-thread",
        "alice",
        "UPDATE chat.messages SET thread_id = %(u)s WHERE id = %(am)s",
        "denied",
    ),
    Case(
        "messages-change-author",
        "alice",
        "UPDATE chat.messages SET user_id = %(bob)s WHERE id = %(am)s",
        "denied",
    ),
    Case(
        "messages-change-created-at",
        "alice",
        "UPDATE chat.messages SET created_at = now() WHERE id = %(am)s",
        "denied",
    ),
    Case("messages-delete-own", "alice", "DELETE FROM chat.messages WHERE id = %(am)s", 1),
    Case("messages-delete-others", "bob", "DELETE FROM chat.messages WHERE id = %(am)s", 0),
    Case("messages-delete-noid", None, "DELETE FROM chat.messages", 0),
    Case("messages-truncate", "alice", "TRUNCATE chat.messages", "denied"),
    # attachments follow their message
    Case("attachments-select-member", "bob", "SELECT id FROM chat.attachments", 1),
    Case("attachments-select-nonmember", "carol", "SELECT id FROM chat.attachments", 0),
    Case("attachments-select-noid", None, "SELECT id FROM chat.attachments", 0),
    Case(
        "attachments-insert-author",
        "alice",
        "INSERT INTO chat.attachments (id, message_id, file_name, content_type, byte_size, storage_key) "
        "VALUES (%(new)s, %(am)s, 'b', 'text/plain', 1, %(new)s::text)",
        1,
    ),
    Case(
        "attachments-insert-on-others-message",
        "bob",
        "INSERT INTO chat.attachments (id, message_id, file_name, content_type, byte_size, storage_key) "
        "VALUES (%(new)s, %(am)s, 'b', 'text/plain', 1, %(new)s::text)",
        "denied",
    ),
    Case("attachments-delete-author", "alice", "DELETE FROM chat.attachments WHERE id = %(aa)s", 1),
    Case(
        "attachments-delete-other-member",
        "bob",
        "DELETE FROM chat.attachments WHERE id = %(aa)s",
        0,
    ),
    Case(
        "attachments-update",
        "alice",
        "UPDATE chat.attachments SET file_name = 'x' WHERE id = %(aa)s",
        "denied",
    ),
    # the shipped view is security_invoker: the messages policies apply through it
    Case("view-select-member", "bob", "SELECT id FROM chat.messages_decrypted", 2),
    Case(
        "view-select-nonmember",
        "carol",
        "SELECT id FROM chat.messages_decrypted WHERE thread_id = %(t)s",
        0,
    ),
    Case("view-select-noid", None, "SELECT id FROM chat.messages_decrypted", 0),
    Case(
        "view-insert",
        "alice",
        "INSERT INTO chat.messages_decrypted (id, thread_id, user_id) VALUES (%(new)s, %(t)s, %(alice)s)",
        "denied",
    ),
    # escapes
    Case("escape-set-role-owner", "alice", "SET ROLE chat_owner", "denied"),
    Case(
        "escape-disable-rls",
        "alice",
        "ALTER TABLE chat.messages DISABLE ROW LEVEL SECURITY",
        "denied",
    ),
    Case("escape-create-in-schema", "alice", "CREATE TABLE chat.x (id int)", "denied"),
    Case(
        "escape-call-helper-as-other-user",
        "carol",
        "SELECT * FROM chat.messages WHERE thread_id IN (SELECT chat.my_thread_ids())",
        1,
    ),
]


def _act(conn: Conn, actor: str | None, params: dict[str, object]) -> None:
    set_identity(conn, None if actor is None else params[actor])  # type: ignore[arg-type]
    prepare_writer(conn)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_isolation(case: Case, chat: SeededChat, app: Conn) -> None:
    params = _params(chat)
    _act(app, case.actor, params)
    errors = {
        "denied": psycopg.errors.InsufficientPrivilege,
        "fk": psycopg.errors.ForeignKeyViolation,
        "no-column": psycopg.errors.UndefinedColumn,
        "no-owner": psycopg.errors.CheckViolation,
    }
    if isinstance(case.expect, str):
        with pytest.raises(errors[case.expect]):
            app.execute(case.sql, params)
        return
    cur = app.execute(case.sql, params)
    count = len(cur.fetchall()) if cur.description else cur.rowcount
    assert count == case.expect


def test_insert_after_leaving_is_denied(chat: SeededChat, app: Conn) -> None:
    params = _params(chat)
    _act(app, "bob", params)
    app.execute(
        "DELETE FROM chat.thread_participants WHERE thread_id = %(t)s AND user_id = %(bob)s", params
    )
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute(
            "INSERT INTO chat.messages (id, thread_id, user_id, content) "
            "VALUES (%(new)s, %(t)s, %(bob)s, 'still here?')",
            params,
        )


def test_creator_becomes_owner_in_one_transaction(chat: SeededChat, app: Conn) -> None:
    params = _params(chat)
    _act(app, "carol", params)
    app.execute(
        "INSERT INTO chat.threads (id, name, created_by) VALUES (%(new)s, 'c', %(carol)s)", params
    )
    app.execute(
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
        "VALUES (%(new)s, %(carol)s, 'owner')",
        params,
    )
    assert app.execute(
        "SELECT count(*) FROM chat.threads WHERE id = %(new)s", params
    ).fetchone() == (1,)
    # A second claim on the now-owned thread is refused.
    _act(app, "alice", params)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute(
            "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
            "VALUES (%(new)s, %(alice)s, 'owner')",
            params,
        )


def test_every_view_is_security_invoker_or_a_barrier_owned_by_the_definer(
    shared_deployed_db: ChatDB,
) -> None:
    # A view that runs as its owner must be chat_definer's (which reads only public
    # columns) and a security barrier (a caller's function sees only what it returns).
    with connect(shared_deployed_db.admin) as conn:
        views = conn.execute(
            "SELECT c.relname, coalesce(c.reloptions, '{}'), pg_get_userbyid(c.relowner) "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'chat' AND c.relkind = 'v' ORDER BY 1"
        ).fetchall()
    kinds = {}
    for name, options, owner in views:
        if "security_invoker=true" in options:
            kinds[name] = "invoker"
        else:
            assert "security_barrier=true" in options and owner == "chat_definer", name
            kinds[name] = "barrier"
    assert kinds == {"messages_decrypted": "invoker", "user_profiles": "barrier"}


def test_a_profile_filter_cannot_probe_users_outside_ones_threads(
    chat: SeededChat, app: Conn
) -> None:
    # Division by zero on carol's row would tell alice that carol's username exists if
    # the caller's WHERE ran before the view's own filter (security_barrier prevents it).
    params = _params(chat)
    _act(app, "alice", params)
    carol = f"carol_{chat.carol.hex[:8]}"  # as seed_chat names her
    row = app.execute(
        "SELECT count(*) FROM chat.user_profiles "
        "WHERE 1 / (CASE WHEN username = %s THEN 0 ELSE 1 END) = 1",
        (carol,),
    ).fetchone()
    assert row == (2,)


def test_adding_a_stranger_reveals_only_their_public_profile(chat: SeededChat, app: Conn) -> None:
    params = _params(chat)
    _act(app, "alice", params)
    # Any known id, even as owner: alice learns carol's public profile, nothing more.
    app.execute(
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
        "VALUES (%(t)s, %(carol)s, 'owner')",
        params,
    )
    assert app.execute("SELECT email FROM chat.users WHERE id = %(carol)s", params).fetchall() == []
    assert app.execute(
        "SELECT username FROM chat.user_profiles WHERE id = %(carol)s", params
    ).fetchall() == [(f"carol_{chat.carol.hex[:8]}",)]
