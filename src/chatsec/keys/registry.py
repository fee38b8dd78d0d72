"""chat.encryption_keys: which key ids the database accepts, checked without holding keys.

`chatsec keys` reaches the database with the migrator login and acts as a NOLOGIN
role for each transaction: chat_owner to write the registry, chat_key_rotator to
re-encrypt. Both SET LOCAL, so nothing outlives the transaction.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Key, Keyring
from chatsec.keys.transaction import key_settings

OWNER = "chat_owner"
ROTATOR = "chat_key_rotator"
_VERIFIER_MESSAGE = b"chatsec-key-check"

Conn = psycopg.Connection[Any]


def verifier(key: Key) -> str:
    """HMAC-SHA256 keyed by the key material; the trigger computes the same from its key.

    Computed here so registering a key never sends the key to the server.
    """
    return hmac.new(key.material.encode(), _VERIFIER_MESSAGE, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Registered:
    id: str
    created_at: datetime
    retired_at: datetime | None


@contextmanager
def acting_as(
    url: DatabaseURL, role: str, keyring: Keyring | None = None, application_name: str = "chatsec"
) -> Iterator[Conn]:
    """One transaction as `role` (with the keyring's keys set locally, if given)."""
    with connect(url, application_name=application_name) as conn, conn.transaction():
        set_role(conn, url, role)
        if keyring is not None:
            set_keys(conn, keyring)
        yield conn


def set_role(conn: Conn, url: DatabaseURL, role: str, local: bool = True) -> None:
    stmt = "SET LOCAL ROLE {}" if local else "SET ROLE {}"
    try:
        conn.execute(sql.SQL(stmt).format(sql.Identifier(role)))
    except psycopg.errors.InsufficientPrivilege:
        raise ChatsecError(
            f"{url.user or 'this login'} cannot act as {role} on {url.target}: "
            "deploy chatsec's migrations with this login (they grant it), or use the migrator URL"
        ) from None


def set_keys(conn: Conn, keyring: Keyring) -> None:
    for name, value in key_settings(keyring):
        # Bind parameters only: the key is never part of the statement text.
        conn.execute("SELECT pg_catalog.set_config(%s, %s, true)", (name, value))


def register(conn: Conn, key: Key) -> bool:
    """Add `key` to the registry (as chat_owner); False if it was there already."""
    row = conn.execute(
        "INSERT INTO chat.encryption_keys (id, verifier) VALUES (%s, %s) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        (key.id, verifier(key)),
    ).fetchone()
    if row is not None:
        return True
    existing = conn.execute(
        "SELECT verifier FROM chat.encryption_keys WHERE id = %s", (key.id,)
    ).fetchone()
    if existing is None or not hmac.compare_digest(str(existing[0]), verifier(key)):
        raise ChatsecError(
            f"key id {key.id} is registered in the database with a different key: "
            "this keyring does not belong to this database"
        )
    return False


def registered(conn: Conn) -> dict[str, Registered]:
    rows = conn.execute(
        "SELECT id, created_at, retired_at FROM chat.encryption_keys ORDER BY id"
    ).fetchall()
    return {str(r[0]): Registered(str(r[0]), r[1], r[2]) for r in rows}


def rows_per_key(conn: Conn) -> dict[str | None, int]:
    """Messages per key id; None counts plaintext rows from before encryption."""
    rows = conn.execute("SELECT key_id, rows FROM chat.encryption_summary()").fetchall()
    return {None if r[0] is None else str(r[0]): int(r[1]) for r in rows}


def mark_retired(conn: Conn, key_id: str) -> None:
    conn.execute(
        "UPDATE chat.encryption_keys SET retired_at = pg_catalog.now() "
        "WHERE id = %s AND retired_at IS NULL",
        (key_id,),
    )
