"""Shared setup for the encryption tests: a keyring, an app engine, two users in a thread."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import sqlalchemy as sa

from chatsec.app import create_app_engine, user_transaction
from chatsec.app.chat import add_participant, create_thread, post_message, register_user
from chatsec.db.connect import connect
from chatsec.keys.keyring import Keyring
from chatsec.keys.manage import generate_key
from tests.conftest import ChatDB


@dataclass
class Chat:
    engine: sa.Engine
    keyring: Keyring
    alice: uuid.UUID
    bob: uuid.UUID
    thread: uuid.UUID


def make_chat(db: ChatDB, keyring_path: Path) -> Chat:
    keyring = Keyring.load_or_empty(keyring_path)
    generate_key(keyring, db.migrator)
    engine = create_app_engine(db.app.libpq)
    alice, bob = uuid.uuid4(), uuid.uuid4()
    for uid, name in ((alice, "alice"), (bob, "bob")):
        with user_transaction(engine, uid, keyring) as conn:
            register_user(conn, uid, f"{name}-{uid.hex[:8]}@example.com", f"{name}_{uid.hex[:8]}")
    with user_transaction(engine, alice, keyring) as conn:
        thread = create_thread(conn, "t")
        add_participant(conn, thread, bob)
    return Chat(engine, keyring, alice, bob, thread)


def post_all(chat: Chat, texts: list[str]) -> Chat:
    """Alice posts each of `texts` in the thread, encrypted with the chat's keyring."""
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        for text in texts:
            post_message(conn, chat.thread, text)
    return chat


def insert_many(chat: Chat, n: int, keyring: Keyring | None = None) -> None:
    with user_transaction(chat.engine, chat.alice, keyring or chat.keyring) as conn:
        conn.execute(
            sa.text(
                "INSERT INTO chat.messages (thread_id, user_id, content) "
                "SELECT :t, chat.current_user_id(), 'bulk message ' || g "
                "FROM pg_catalog.generate_series(1, :n) g"
            ),
            {"t": chat.thread, "n": n},
        )


def decrypted_contents(
    engine: sa.Engine,
    user: uuid.UUID,
    keyring: Keyring,
    order_by: Literal["id", "content"] = "id",
) -> list[str]:
    """Every message `user` may read, decrypted through chat.messages_decrypted."""
    with user_transaction(engine, user, keyring) as conn:
        query = sa.text(f"SELECT content FROM chat.messages_decrypted ORDER BY {order_by}")
        return [str(c) for c in conn.execute(query).scalars()]


def keys_env(db: ChatDB, keyring: Path) -> dict[str, str]:
    """The environment `chatsec keys` runs with against `db`."""
    return {"CHATSEC_DATABASE_URL": db.migrator.libpq, "CHATSEC_KEYRING": str(keyring)}


def copy_ciphertext_behind_the_trigger(db: ChatDB, source: uuid.UUID, target: uuid.UUID) -> None:
    """As the superuser with triggers off: `target` gets `source`'s ciphertext (and key id),
    which opens with the key but is bound to `source`, as a DBA or a tampered restore could."""
    with connect(db.admin) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE chat.messages t SET content = s.content, key_id = s.key_id "
            "FROM chat.messages s WHERE s.id = %s AND t.id = %s",
            (source, target),
        )
        conn.commit()
