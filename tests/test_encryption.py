"""The encryption trigger on a real database: ciphertext at rest, plaintext only with the key."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from chatsec.app import user_transaction
from chatsec.app.chat import post_message
from chatsec.app.session import set_local
from chatsec.db.connect import connect
from chatsec.keys.keyring import Key, Keyring
from tests.conftest import ChatDB
from tests.encryption_support import Chat, make_chat

ARMOR = "-----BEGIN PGP MESSAGE-----"


@pytest.fixture()
def chat(deployed_db: ChatDB, tmp_path: Path) -> Iterator[Chat]:
    made = make_chat(deployed_db, tmp_path / "keyring.json")
    yield made
    made.engine.dispose()


def _stored(chat: Chat, message_id: uuid.UUID) -> tuple[str, str]:
    with user_transaction(chat.engine, chat.alice) as conn:
        row = conn.execute(
            sa.text("SELECT content, key_id FROM chat.messages WHERE id = :id"), {"id": message_id}
        ).one()
    return str(row[0]), str(row[1])


def _read(chat: Chat, message_id: uuid.UUID, keyring: Keyring | None = None) -> str:
    with user_transaction(chat.engine, chat.bob, keyring or chat.keyring) as conn:
        return str(
            conn.execute(
                sa.text("SELECT content FROM chat.messages_decrypted WHERE id = :id"),
                {"id": message_id},
            ).scalar_one()
        )


def _count(chat: Chat) -> int:
    with user_transaction(chat.engine, chat.alice) as conn:
        return int(conn.execute(sa.text("SELECT count(*) FROM chat.messages")).scalar_one())


def test_round_trip_and_nothing_plaintext_in_pg_dump(chat: Chat, deployed_db: ChatDB) -> None:
    texts = [f"the launch code is {uuid.uuid4().hex}" for _ in range(3)]
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        ids = [post_message(conn, chat.thread, text) for text in texts]
    for message_id, text in zip(ids, texts, strict=True):
        stored, key_id = _stored(chat, message_id)
        assert stored.startswith(ARMOR)
        assert f"Chatsec-Key: {chat.keyring.active.id}" in stored
        assert key_id == chat.keyring.active.id
        assert _read(chat, message_id) == text
    dump = subprocess.run(
        [str(deployed_db.sandbox.bindir / "pg_dump"), "-d", deployed_db.admin.libpq],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout
    assert ARMOR in dump
    for text in texts:
        assert text not in dump
        assert text.split()[-1] not in dump
    for key in chat.keyring.keys:
        assert key.material not in dump


def _attempt_insert(chat: Chat, settings: dict[str, str]) -> str:
    """Try to post as alice with exactly `settings`; the database error's first line."""
    with pytest.raises(sa.exc.DBAPIError) as info:  # noqa: SIM117 - the raise is the point
        with user_transaction(chat.engine, chat.alice) as conn:
            for name, value in settings.items():
                set_local(conn, name, value)
            post_message(conn, chat.thread, "must never be stored")
    return str(info.value.orig).splitlines()[0]


def test_fail_closed(chat: Chat) -> None:
    key = chat.keyring.active
    assert "no encryption key" in _attempt_insert(chat, {})
    assert "no encryption key" in _attempt_insert(
        chat, {"app.encryption_key": "", "app.encryption_key_id": key.id}
    )
    assert "is not registered" in _attempt_insert(
        chat, {"app.encryption_key": key.material, "app.encryption_key_id": "k-unknown"}
    )
    assert "wrong key for encryption key id" in _attempt_insert(
        chat, {"app.encryption_key": "00" * 32, "app.encryption_key_id": key.id}
    )
    assert _count(chat) == 0


def test_update_without_content_change_keeps_ciphertext(chat: Chat) -> None:
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        message_id = post_message(conn, chat.thread, "stable text")
    before = _stored(chat, message_id)
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        conn.execute(
            sa.text("UPDATE chat.messages SET status = 'read', content = content WHERE id = :id"),
            {"id": message_id},
        )
    assert _stored(chat, message_id) == before
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        conn.execute(
            sa.text("UPDATE chat.messages SET content = 'edited' WHERE id = :id"), {"id": message_id}
        )
    assert _stored(chat, message_id)[0] != before[0]
    assert _read(chat, message_id) == "edited"


def test_upsert_does_not_double_encrypt(chat: Chat) -> None:
    message_id = uuid.uuid4()
    upsert = sa.text(
        "INSERT INTO chat.messages (id, thread_id, user_id, content) "
        "VALUES (:id, :t, chat.current_user_id(), :c) "
        "ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content"
    )
    for text in ("first", "second"):
        with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
            conn.execute(upsert, {"id": message_id, "t": chat.thread, "c": text})
    assert _read(chat, message_id) == "second"


def test_literal_armor_text_is_still_encrypted(chat: Chat) -> None:
    text = f"{ARMOR}\n\nnot really\n-----END PGP MESSAGE-----\n"
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        message_id = post_message(conn, chat.thread, text)
    assert _stored(chat, message_id)[0] != text
    assert _read(chat, message_id) == text


def _read_reported(
    chat: Chat, message_id: uuid.UUID, keyring: Keyring
) -> tuple[str | None, list[str]]:
    """The message as bob reads it with `keyring`, and the warnings the server sent."""
    warnings: list[str] = []
    with user_transaction(chat.engine, chat.bob, keyring) as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.add_notice_handler(lambda d: warnings.append(d.message_primary or ""))
        content = conn.execute(
            sa.text("SELECT content FROM chat.messages_decrypted WHERE id = :id"),
            {"id": message_id},
        ).scalar_one()
    return content, warnings


def test_wrong_or_missing_key_on_read_is_reported_not_fatal(chat: Chat, tmp_path: Path) -> None:
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        message_id = post_message(conn, chat.thread, "read me")
        other = post_message(conn, chat.thread, "and me")
    active = chat.keyring.active
    wrong = Keyring(
        tmp_path / "wrong.json", [Key(active.id, active.created_at, "active", b"\x01" * 32)]
    )
    content, warnings = _read_reported(chat, message_id, wrong)
    assert content is None
    assert warnings == [
        f"chatsec: message {message_id} is not shown: wrong key for key id "
        f"'{active.id}' or corrupt data"
    ]
    content, warnings = _read_reported(chat, message_id, Keyring(tmp_path / "none.json"))
    assert content is None and "no key" in warnings[0] and str(message_id) in warnings[0]
    # One unreadable row does not take the others down with it.
    with user_transaction(chat.engine, chat.bob, chat.keyring) as conn:
        rows = dict(
            conn.execute(
                sa.text("SELECT id, content FROM chat.messages_decrypted WHERE id IN (:a, :b)"),
                {"a": message_id, "b": other},
            ).all()
        )
    assert rows == {message_id: "read me", other: "and me"}


def test_keys_end_with_the_transaction(chat: Chat) -> None:
    """set_config(..., true): a pooled connection carries no key into the next transaction."""
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        post_message(conn, chat.thread, "x")
    with chat.engine.connect() as conn:
        value = conn.execute(
            sa.text("SELECT pg_catalog.current_setting('app.encryption_key', true)")
        ).scalar_one()
    assert not value


def test_app_user_cannot_disable_or_drop_the_trigger(deployed_db: ChatDB) -> None:
    with connect(deployed_db.app) as conn:
        for stmt in (
            "ALTER TABLE chat.messages DISABLE TRIGGER messages_z_encrypt_content",
            "ALTER TABLE chat.messages DISABLE TRIGGER ALL",
            "DROP TRIGGER messages_z_encrypt_content ON chat.messages",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(stmt)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SELECT chat.encrypt_message()")


def test_function_hardening(deployed_db: ChatDB) -> None:
    with connect(deployed_db.admin) as conn:
        rows = conn.execute(
            """
            SELECT p.proname, p.proconfig, p.prosecdef,
                   pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')
              FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'chat'::regnamespace
               AND p.proname IN ('encrypt_message', 'decrypt_message')
            """
        ).fetchall()
    assert len(rows) == 2
    for _name, config, definer, public_exec in rows:
        assert config == ["search_path=pg_catalog, pg_temp"]
        assert definer is False
        assert public_exec is False
