"""Thread role invariants that one statement's policies cannot see: a thread keeps an owner.

Concurrent departures, isolation levels and administrators' cascades, against the
trigger thread_participants_keep_an_owner (policies/functions.toml keep_an_owner).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from chatsec.db.connect import connect
from tests.chat_fixtures import SeededChat, seed_chat
from tests.conftest import ChatDB, set_identity

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture()
def chat(deployed_db: ChatDB) -> SeededChat:
    with connect(deployed_db.admin) as conn:
        seeded = seed_chat(conn)
        # bob becomes a second owner of t: two owners who may each leave alone.
        conn.execute(
            "UPDATE chat.thread_participants SET role = 'owner' WHERE thread_id = %s AND user_id = %s",
            (seeded.t, seeded.bob),
        )
        conn.commit()
    return seeded


@pytest.fixture()
def app_pair(deployed_db: ChatDB) -> Iterator[tuple[Conn, Conn]]:
    with connect(deployed_db.app) as one, connect(deployed_db.app) as two:
        yield one, two


def _as(conn: Conn, user: uuid.UUID) -> None:
    set_identity(conn, user)


def _leave(conn: Conn, user: uuid.UUID, thread: uuid.UUID) -> None:
    _as(conn, user)
    conn.execute(
        "DELETE FROM chat.thread_participants WHERE thread_id = %s AND user_id = %s", (thread, user)
    )


def _owners(db: ChatDB, thread: uuid.UUID) -> list[str]:
    with connect(db.admin) as conn:
        rows = conn.execute(
            "SELECT user_id FROM chat.thread_participants WHERE thread_id = %s AND role = 'owner'",
            (thread,),
        ).fetchall()
    return [str(r[0]) for r in rows]


def test_one_of_two_owners_may_leave(
    deployed_db: ChatDB, chat: SeededChat, app_pair: tuple[Conn, Conn]
) -> None:
    one, _ = app_pair
    _leave(one, chat.alice, chat.t)
    one.commit()
    assert _owners(deployed_db, chat.t) == [str(chat.bob)]


def test_two_owners_leaving_at_once_leave_one_owner(
    deployed_db: ChatDB, chat: SeededChat, app_pair: tuple[Conn, Conn]
) -> None:
    one, two = app_pair
    _leave(one, chat.alice, chat.t)  # not committed: holds the thread's owner lock
    outcome: list[BaseException | None] = []

    def bob_leaves() -> None:
        try:
            _leave(two, chat.bob, chat.t)
            two.commit()
            outcome.append(None)
        except psycopg.Error as exc:
            two.rollback()
            outcome.append(exc)

    worker = threading.Thread(target=bob_leaves)
    worker.start()
    worker.join(0.5)
    assert worker.is_alive(), "bob's departure did not wait for alice's"
    one.commit()
    worker.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], psycopg.errors.CheckViolation)
    assert _owners(deployed_db, chat.t) == [str(chat.bob)]


def test_owners_leave_in_serializable_transactions_one_at_a_time(
    deployed_db: ChatDB, chat: SeededChat, app_pair: tuple[Conn, Conn]
) -> None:
    one, two = app_pair
    for conn in (one, two):
        conn.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
    _as(two, chat.bob)
    two.execute("SELECT 1")  # bob's snapshot predates alice's commit
    _leave(one, chat.alice, chat.t)
    one.commit()
    with pytest.raises((psycopg.errors.SerializationFailure, psycopg.errors.CheckViolation)):
        _leave(two, chat.bob, chat.t)
        two.commit()
    two.rollback()
    assert _owners(deployed_db, chat.t) == [str(chat.bob)]


def test_an_owner_does_not_leave_in_a_repeatable_read_transaction(
    chat: SeededChat, app_pair: tuple[Conn, Conn]
) -> None:
    one, _ = app_pair
    one.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
    with pytest.raises(psycopg.errors.FeatureNotSupported, match="READ COMMITTED"):
        _leave(one, chat.alice, chat.t)
    one.rollback()


def test_the_last_owner_hands_over_then_leaves(
    deployed_db: ChatDB, chat: SeededChat, app_pair: tuple[Conn, Conn]
) -> None:
    one, _ = app_pair
    # carol's thread u has one owner and no one else: she adds alice, makes her owner, leaves.
    _as(one, chat.carol)
    one.execute(
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) VALUES (%s, %s, 'member')",
        (chat.u, chat.alice),
    )
    with pytest.raises(psycopg.errors.CheckViolation), one.transaction():
        _leave(one, chat.carol, chat.u)
    one.execute(
        "UPDATE chat.thread_participants SET role = 'owner' WHERE thread_id = %s AND user_id = %s",
        (chat.u, chat.alice),
    )
    _leave(one, chat.carol, chat.u)
    one.commit()
    assert _owners(deployed_db, chat.u) == [str(chat.alice)]


def test_an_owner_cannot_remove_or_demote_another_owner(
    deployed_db: ChatDB, chat: SeededChat, app_pair: tuple[Conn, Conn]
) -> None:
    one, _ = app_pair
    _as(one, chat.alice)
    removed = one.execute(
        "DELETE FROM chat.thread_participants WHERE thread_id = %s AND user_id = %s",
        (chat.t, chat.bob),
    ).rowcount
    demoted = one.execute(
        "UPDATE chat.thread_participants SET role = 'member' WHERE thread_id = %s AND user_id = %s",
        (chat.t, chat.bob),
    ).rowcount
    one.commit()
    assert (removed, demoted) == (0, 0)
    assert sorted(_owners(deployed_db, chat.t)) == sorted([str(chat.alice), str(chat.bob)])


def test_an_admin_cannot_take_over_a_thread(
    deployed_db: ChatDB, chat: SeededChat, app_pair: tuple[Conn, Conn]
) -> None:
    one, _ = app_pair
    # carol is made an admin of t by its owner, then tries to become owner and oust both.
    _as(one, chat.alice)
    one.execute(
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) VALUES (%s, %s, 'admin')",
        (chat.t, chat.carol),
    )
    one.commit()
    _as(one, chat.carol)
    with pytest.raises(psycopg.errors.InsufficientPrivilege), one.transaction():
        one.execute(
            "UPDATE chat.thread_participants SET role = 'owner' "
            "WHERE thread_id = %s AND user_id = %s",
            (chat.t, chat.carol),
        )
    touched = 0
    for owner in (chat.alice, chat.bob):
        touched += one.execute(
            "UPDATE chat.thread_participants SET role = 'member' "
            "WHERE thread_id = %s AND user_id = %s",
            (chat.t, owner),
        ).rowcount
        touched += one.execute(
            "DELETE FROM chat.thread_participants WHERE thread_id = %s AND user_id = %s",
            (chat.t, owner),
        ).rowcount
    with pytest.raises(psycopg.errors.InsufficientPrivilege), one.transaction():
        one.execute(
            "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
            "VALUES (%s, %s, 'admin')",
            (chat.t, uuid.uuid4()),
        )
    one.commit()
    assert touched == 0
    assert sorted(_owners(deployed_db, chat.t)) == sorted([str(chat.alice), str(chat.bob)])


def test_an_admin_manages_members_only(
    deployed_db: ChatDB, chat: SeededChat, app_pair: tuple[Conn, Conn]
) -> None:
    dave = uuid.uuid4()
    with connect(deployed_db.admin) as conn:
        conn.execute(
            "INSERT INTO chat.users (id, email, username) VALUES (%s, %s, %s)",
            (dave, f"{dave}@example.com", f"dave_{dave.hex[:8]}"),
        )
        conn.commit()
    one, _ = app_pair
    _as(one, chat.alice)
    one.execute(
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) VALUES (%s, %s, 'admin')",
        (chat.t, chat.carol),
    )
    _as(one, chat.carol)
    added = one.execute(
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) VALUES (%s, %s, 'member')",
        (chat.t, dave),
    ).rowcount
    promoted = one.execute(
        "UPDATE chat.thread_participants SET role = 'admin' WHERE thread_id = %s AND user_id = %s",
        (chat.t, dave),
    ).rowcount
    removed = one.execute(
        "DELETE FROM chat.thread_participants WHERE thread_id = %s AND user_id = %s",
        (chat.t, dave),
    ).rowcount
    one.rollback()
    assert (added, promoted, removed) == (1, 0, 1)


def test_an_administrator_may_still_delete_a_thread_or_a_user(
    deployed_db: ChatDB, chat: SeededChat
) -> None:
    # Cascades from a superuser's DELETE are not departures: the thread or the user is gone.
    with connect(deployed_db.admin) as conn:
        conn.execute("DELETE FROM chat.threads WHERE id = %s", (chat.t,))
        conn.execute("DELETE FROM chat.users WHERE id = %s", (chat.carol,))
        conn.commit()
    assert _owners(deployed_db, chat.t) == [] and _owners(deployed_db, chat.u) == []
