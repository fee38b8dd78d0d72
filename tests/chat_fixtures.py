"""A small known chat, written as the superuser (which bypasses RLS), for isolation tests."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from chatsec.keys import registry
from chatsec.keys.keyring import Keyring

TEST_KEY = Keyring.empty(Path("unused-keyring.json")).generate()


@dataclass(frozen=True)
class SeededChat:
    alice: uuid.UUID  # owner of thread t
    bob: uuid.UUID  # member of thread t
    carol: uuid.UUID  # member of thread u only
    t: uuid.UUID
    u: uuid.UUID
    alice_msg: uuid.UUID
    bob_msg: uuid.UUID
    carol_msg: uuid.UUID
    alice_attachment: uuid.UUID


def prepare_writer(conn: psycopg.Connection[tuple[object, ...]]) -> None:
    """Session settings a writer of chat.messages needs: a registered encryption key.

    The encryption trigger refuses rows without one, superuser included. One key per
    test process, never on disk; a connection that may (the superuser seeding the chat)
    registers it, and every writer sets it for its session (set_config, is_local = false).
    """
    key = TEST_KEY
    can_register = conn.execute(
        "SELECT pg_catalog.has_table_privilege('chat.encryption_keys', 'INSERT')"
    ).fetchone()
    if can_register and can_register[0]:
        registry.register(conn, key)
    for name, value in (
        ("app.encryption_key", key.material),
        ("app.encryption_key_id", key.id),
        ("app.decryption_keys", json.dumps({key.id: key.material})),
    ):
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))


def seed_chat(conn: psycopg.Connection[tuple[object, ...]]) -> SeededChat:
    ids = {k: uuid.uuid4() for k in ("alice", "bob", "carol", "t", "u", "am", "bm", "cm", "aa")}
    prepare_writer(conn)
    for name in ("alice", "bob", "carol"):
        conn.execute(
            "INSERT INTO chat.users (id, email, username) VALUES (%s, %s, %s)",
            (ids[name], f"{name}-{ids[name].hex[:8]}@example.com", f"{name}_{ids[name].hex[:8]}"),
        )
    conn.execute(
        "INSERT INTO chat.threads (id, name, created_by) VALUES (%s, 't', %s), (%s, 'u', %s)",
        (ids["t"], ids["alice"], ids["u"], ids["carol"]),
    )
    conn.execute(
        "INSERT INTO chat.thread_participants (thread_id, user_id, role) VALUES "
        "(%s, %s, 'owner'), (%s, %s, 'member'), (%s, %s, 'owner')",
        (ids["t"], ids["alice"], ids["t"], ids["bob"], ids["u"], ids["carol"]),
    )
    for msg, thread, user in (("am", "t", "alice"), ("bm", "t", "bob"), ("cm", "u", "carol")):
        conn.execute(
            "INSERT INTO chat.messages (id, thread_id, user_id, content) VALUES (%s, %s, %s, %s)",
            (ids[msg], ids[thread], ids[user], f"secret from {user}"),
        )
    conn.execute(
        "INSERT INTO chat.attachments (id, message_id, file_name, content_type, byte_size, storage_key) "
        "VALUES (%s, %s, 'a.png', 'image/png', 10, %s)",
        (ids["aa"], ids["am"], f"s3://bucket/{ids['aa']}"),
    )
    return SeededChat(
        ids["alice"],
        ids["bob"],
        ids["carol"],
        ids["t"],
        ids["u"],
        ids["am"],
        ids["bm"],
        ids["cm"],
        ids["aa"],
    )
