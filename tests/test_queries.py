"""chatsec.queries on a generated chat: the rewrite equals the design's query, pages, RLS."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa

from chatsec import queries
from chatsec.app import create_app_engine, user_transaction
from chatsec.app.chat import create_thread
from chatsec.bench.generate import Scale, generate, set_session_keys
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Keyring
from tests.conftest import ChatDB


@dataclass
class Generated:
    db: ChatDB
    engine: sa.Engine
    keyring: Keyring


@pytest.fixture(scope="module")
def chat(
    shared_deployed_db: ChatDB, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Generated]:
    keyring = Keyring.empty(Path(tmp_path_factory.mktemp("keys")) / "keyring.json")
    keyring.generate()
    keyring.generate()
    keyring.save()
    scale = Scale(users=40, threads=30, messages=1500)
    generate(shared_deployed_db.admin, scale, keyring, lambda _: None)
    engine = create_app_engine(shared_deployed_db.app.libpq)
    yield Generated(shared_deployed_db, engine, keyring)
    engine.dispose()


def _admin_rows(chat: Generated, sql: str, params: dict[str, object]) -> list[sa.Row[object]]:
    engine = sa.create_engine(chat.db.admin.sqlalchemy, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        set_session_keys(
            conn.connection.driver_connection,
            chat.keyring.active,  # type: ignore[arg-type]
            chat.keyring.readable_keys,
        )
        rows = list(conn.execute(sa.text(sql), params).all())
    engine.dispose()
    return rows


def _busy_users(chat: Generated, n: int) -> list[uuid.UUID]:
    rows = _admin_rows(
        chat,
        "SELECT user_id FROM chat.thread_participants GROUP BY user_id "
        "ORDER BY count(*) DESC, user_id LIMIT :n",
        {"n": n},
    )
    return [r[0] for r in rows]


def test_thread_list_rewrite_equals_the_design_query(chat: Generated) -> None:
    compared = 0
    for user in _busy_users(chat, 5):
        with user_transaction(chat.engine, user, chat.keyring) as conn:
            rewrite = queries.thread_list(conn, limit=500)
            assert rewrite, "a participant sees their threads"
            # The design takes one :last_read for all threads; the rewrite uses each
            # thread's own last_read_at. Feed the design each thread's value in turn.
            for row in rewrite:
                design = (
                    conn.execute(
                        sa.text(queries.THREAD_LIST_DESIGN),
                        {
                            "user_id": user,
                            "limit": 500,
                            "offset": 0,
                            "last_read": row.last_read_at or "-infinity",
                        },
                    )
                    .mappings()
                    .all()
                )
                match = [d for d in design if d["id"] == row.id]
                assert len(match) == 1
                d = match[0]
                assert (row.participant_count, row.message_count, row.unread_count) == (
                    d["participant_count"],
                    d["message_count"],
                    d["unread_count"],
                )
                assert (row.name, row.last_message_at, row.created_by) == (
                    d["name"],
                    d["last_message_at"],
                    d["created_by"],
                )
                compared += 1
            assert {d["id"] for d in design} == {r.id for r in rewrite}
            assert any(r.unread_count and r.unread_count < r.message_count for r in rewrite)
            # The design's order (last_message_at DESC, NULLs first), ties by id; OFFSET pages.
            for a, b in zip(rewrite, rewrite[1:], strict=False):
                assert _before(a, b)
            assert queries.thread_list(conn, limit=3, offset=2) == rewrite[2:5]
    assert compared >= 10


def _before(a: queries.ThreadSummary, b: queries.ThreadSummary) -> bool:
    if a.last_message_at == b.last_message_at:
        return a.id < b.id
    if a.last_message_at is None or b.last_message_at is None:
        return a.last_message_at is None
    return a.last_message_at > b.last_message_at


def test_message_history_pages_decrypted_with_authors_and_attachments(chat: Generated) -> None:
    user = _busy_users(chat, 1)[0]
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        thread = max(queries.thread_list(conn, limit=500), key=lambda t: t.message_count)
        # A batch shares one created_at: the (created_at, id) cursor must not drop any.
        tied = queries.post_messages(
            conn, [queries.NewMessage(thread.id, f"tie {i}") for i in range(9)]
        )
        # Generated attachments are random: give one page row a known one (as its author).
        conn.execute(
            sa.text(
                "INSERT INTO chat.attachments (message_id, file_name, content_type, byte_size, "
                "storage_key) VALUES (:m, 'tie.png', 'image/png', 3, :k)"
            ),
            {"m": tied[0], "k": f"test/{tied[0]}"},
        )
    expected = _admin_rows(
        chat,
        "SELECT m.id, chat.decrypt_message(m.content, m.key_id, m.id, m.thread_id), u.username, "
        "(SELECT count(*) FROM chat.attachments a WHERE a.message_id = m.id) "
        "FROM chat.messages m JOIN chat.users u ON u.id = m.user_id "
        "WHERE m.thread_id = :t ORDER BY m.created_at DESC, m.id DESC",
        {"t": thread.id},
    )
    seen: list[queries.HistoryMessage] = []
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        page = queries.message_history(conn, thread.id, limit=7)
        while page:
            assert len(page) <= 7
            seen += page
            page = queries.message_history(conn, thread.id, before=page[-1].cursor, limit=7)
    assert [(m.id, m.content, m.username, m.attachment_count) for m in seen] == [
        tuple(r) for r in expected
    ]
    assert not any(m.content.startswith("-----BEGIN PGP") for m in seen)
    assert any(m.attachment_count for m in seen)
    assert {m.content for m in seen} >= {f"tie {i}" for i in range(9)}


def test_message_history_pages_are_total_over_a_shared_created_at(chat: Generated) -> None:
    """A batch insert gives all its rows one created_at: paging by the (created_at, id)
    cursor must return every row exactly once, in (created_at, id) descending order,
    even when a page boundary falls inside the batch (page size 7 does not divide 130)."""
    user = _busy_users(chat, 1)[0]
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        thread = create_thread(conn, "shared created_at")
        older = queries.post_messages(conn, [queries.NewMessage(thread, "older")])
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        batch = queries.post_messages(
            conn, [queries.NewMessage(thread, f"batch {i}") for i in range(130)]
        )
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        newer = queries.post_messages(
            conn, [queries.NewMessage(thread, f"newer {i}") for i in range(3)]
        )
    expected = _admin_rows(
        chat,
        "SELECT id, created_at FROM chat.messages WHERE thread_id = :t "
        "ORDER BY created_at DESC, id DESC",
        {"t": thread},
    )
    shared = {r[1] for r in expected if r[0] in set(batch)}
    assert len(shared) == 1, "the batch shares one created_at"
    assert {r[0] for r in expected} == set(older + batch + newer)
    seen: list[queries.HistoryMessage] = []
    pages = 0
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        page = queries.message_history(conn, thread, limit=7)
        while page:
            pages += 1
            assert len(page) <= 7
            seen += page
            page = queries.message_history(conn, thread, before=page[-1].cursor, limit=7)
    assert [m.id for m in seen] == [r[0] for r in expected]  # each once, in order
    assert len({m.id for m in seen}) == len(seen) == 134
    assert pages == -(-134 // 7)
    keys = [(m.created_at, m.id) for m in seen]
    assert all(a > b for a, b in zip(keys, keys[1:], strict=False)), "strictly descending"
    assert {m.content for m in seen if m.id in set(batch)} == {f"batch {i}" for i in range(130)}


def test_non_member_gets_nothing(chat: Generated) -> None:
    user = _busy_users(chat, 1)[0]
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        thread = queries.thread_list(conn, limit=1)[0]
    outsider = _admin_rows(
        chat,
        "SELECT id FROM chat.users u WHERE NOT EXISTS (SELECT 1 FROM chat.thread_participants tp "
        "WHERE tp.user_id = u.id AND tp.thread_id = :t) LIMIT 1",
        {"t": thread.id},
    )[0][0]
    with user_transaction(chat.engine, outsider, chat.keyring) as conn:
        assert queries.message_history(conn, thread.id, limit=50) == []
        assert thread.id not in {t.id for t in queries.thread_list(conn, limit=500)}
        counts = conn.execute(
            sa.text("SELECT * FROM chat.my_thread_counts(ARRAY[CAST(:t AS uuid)])"),
            {"t": thread.id},
        ).all()
        assert counts == []


def test_post_messages_inserts_a_batch_encrypted(chat: Generated) -> None:
    user = _busy_users(chat, 1)[0]
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        thread = queries.thread_list(conn, limit=1)[0]
        ids = queries.post_messages(
            conn, [queries.NewMessage(thread.id, f"batch {i}") for i in range(25)]
        )
    assert len(set(ids)) == 25
    stored = _admin_rows(
        chat,
        "SELECT content, key_id, chat.decrypt_message(content, key_id, id, thread_id) FROM chat.messages "
        "WHERE id = ANY(:ids)",
        {"ids": ids},
    )
    assert len(stored) == 25
    assert all(r[0].startswith("-----BEGIN PGP MESSAGE-----") for r in stored)
    assert {r[1] for r in stored} == {chat.keyring.active.id}
    assert sorted(r[2] for r in stored) == sorted(f"batch {i}" for i in range(25))


def test_bad_page_sizes_are_one_clear_error(chat: Generated) -> None:
    user = _busy_users(chat, 1)[0]
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        with pytest.raises(ChatsecError, match="limit must be between 1 and 500"):
            queries.message_history(conn, uuid.uuid4(), limit=0)
        with pytest.raises(ChatsecError, match="offset must not be negative"):
            queries.thread_list(conn, offset=-1)
