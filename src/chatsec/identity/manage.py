"""`chatsec keys identity generate | rotate | retire | status` without the CLI.

The identity keyring is a chatsec keyring file of its own; its keys are registered in
chat.identity_keys (secret included: the database verifies with it), as chat_identity,
the only role that can read that table. Every change runs inside
chatsec.keys.manage.changing(): the keyring's file lock, then the database's lock.
Order, as for encryption keys: a new key is saved, then registered, then made active
and saved again, so an application that reloads the keyring at any moment signs with a
key the database accepts; a retired key stops verifying in the database first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Key, Keyring
from chatsec.keys.manage import changing, pending_key

IDENTITY_ROLE = "chat_identity"

Conn = psycopg.Connection[Any]


def _register(conn: Conn, key: Key) -> bool:
    """Add `key` to chat.identity_keys; False if it was there already (same secret)."""
    row = conn.execute(
        "INSERT INTO chat.identity_keys (id, secret) VALUES (%s, %s) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        (key.id, key.secret),
    ).fetchone()
    if row is not None:
        return True
    same = conn.execute(
        "SELECT secret = %s FROM chat.identity_keys WHERE id = %s", (key.secret, key.id)
    ).fetchone()
    if same is None or not same[0]:
        raise ChatsecError(
            f"identity key id {key.id} is registered in the database with a different "
            "secret: this identity keyring does not belong to this database"
        )
    return False


@contextmanager
def _as_identity(url: DatabaseURL) -> Iterator[Conn]:
    """One transaction as chat_identity; before revision 0011, one clear line."""
    with connect(url, application_name="chatsec-keys") as conn, conn.transaction():
        # Asked as the migrator: chat_identity (cluster-wide, made by another database's
        # 0011) may exist where this database has no table for it to use.
        row = conn.execute("SELECT pg_catalog.to_regclass('chat.identity_keys')").fetchone()
        if row is None or row[0] is None:
            raise ChatsecError(
                f"{url.target} has no signed identity (chat.identity_keys, role "
                f"{IDENTITY_ROLE}): deploy chatsec's migrations (revision 0011) first"
            )
        registry.set_role(conn, url, IDENTITY_ROLE)
        yield conn


def register_identity_keys(keyring: Keyring, url: DatabaseURL) -> list[str]:
    """Register every key of the identity keyring that is not retired; the ids added.

    Without the locks of changing(): for a database nothing else manages yet (a fresh
    deployment's first key, the tests' template).
    """
    added = []
    with _as_identity(url) as conn:
        for key in keyring.keys:
            if key.status in ("active", "previous") and _register(conn, key):
                added.append(key.id)
    return added


def _introduce(keyring: Keyring, url: DatabaseURL) -> tuple[Key, Key | None]:
    """(the new active key, the key it replaced); the caller holds changing()."""
    replaced = next((k for k in keyring.keys if k.status == "active"), None)
    key = pending_key(keyring)
    if key is None:
        key = keyring.generate(activate=False)
        keyring.save()
    register_identity_keys(keyring, url)
    keyring.activate(key.id)
    keyring.save()
    return key, replaced


def register_identity_keyring(
    keyring: Keyring, url: DatabaseURL, wait_s: float | None = None
) -> list[str]:
    """Register the keyring's keys that are not retired (after a restore: backups hold
    no identity key); the ids newly registered."""
    with changing(keyring, url, "keys identity register", wait_s):
        if not any(k.status == "active" for k in keyring.keys):
            raise ChatsecError(
                f"identity keyring {keyring.path} has no active key: chatsec keys identity generate"
            )
        return register_identity_keys(keyring, url)


def generate_identity_key(
    keyring: Keyring, url: DatabaseURL, wait_s: float | None = None
) -> tuple[Key, Key | None]:
    """A new active identity key, registered first; the previous one keeps verifying."""
    with changing(keyring, url, "keys identity generate", wait_s):
        return _introduce(keyring, url)


def _retire_in_database(url: DatabaseURL, key_id: str) -> None:
    with _as_identity(url) as conn:
        conn.execute(
            "UPDATE chat.identity_keys SET retired_at = pg_catalog.now() "
            "WHERE id = %s AND retired_at IS NULL",
            (key_id,),
        )


def _retire(keyring: Keyring, url: DatabaseURL, key_id: str) -> None:
    key = keyring.get(key_id)
    if key.status == "active":
        raise ChatsecError(
            f"identity key {key_id} is the active key of {keyring.path}: the application "
            "signs with it; chatsec keys identity rotate replaces it"
        )
    # The database first: from its commit on, tokens signed with the key verify no more.
    # Already retired in the file: a retire killed after saving it, finished here.
    _retire_in_database(url, key_id)
    if key.status != "retired":
        keyring.retire(key_id)
        keyring.save()


def retire_identity_key(
    keyring: Keyring, url: DatabaseURL, key_id: str, wait_s: float | None = None
) -> None:
    """Tokens signed with `key_id` stop verifying; refused for the active key."""
    with changing(keyring, url, "keys identity retire", wait_s):
        _retire(keyring, url, key_id)


@dataclass(frozen=True)
class Rotated:
    key: Key  # the new active key
    replaced: Key | None  # the key it replaced: still verifies until retired
    retired: list[str]  # older keys retired now


def rotate_identity_key(keyring: Keyring, url: DatabaseURL, wait_s: float | None = None) -> Rotated:
    """A new active key; every key older than the one it replaces is retired.

    Two keys verify during the switch: the new one and the one it replaced, which
    application processes that have not reloaded the identity keyring still sign
    with. Retire that one (`chatsec keys identity retire`) once they all have.
    """
    with changing(keyring, url, "keys identity rotate", wait_s):
        key, replaced = _introduce(keyring, url)
        keep = {key.id} | ({replaced.id} if replaced else set())
        older = [k.id for k in keyring.keys if k.status == "previous" and k.id not in keep]
        for key_id in older:
            _retire(keyring, url, key_id)
        return Rotated(key, replaced, older)


@dataclass(frozen=True)
class IdentityKeyStatus:
    id: str
    in_keyring: str  # active, previous, retired, or "missing"
    in_database: str  # verifies, retired, or "not registered"


def identity_status(keyring: Keyring | None, url: DatabaseURL) -> list[IdentityKeyStatus]:
    with _as_identity(url) as conn:
        rows = conn.execute(
            "SELECT id, retired_at IS NOT NULL FROM chat.identity_keys ORDER BY created_at, id"
        ).fetchall()
    registered = {str(r[0]): "retired" if r[1] else "verifies" for r in rows}
    in_file = {k.id: str(k.status) for k in keyring.keys} if keyring else {}
    ids = list(in_file) + [i for i in registered if i not in in_file]
    return [
        IdentityKeyStatus(i, in_file.get(i, "missing"), registered.get(i, "not registered"))
        for i in ids
    ]
