"""What `chatsec keys generate | register | status | retire` do, without the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Key, Keyring


def generate_key(keyring: Keyring, url: DatabaseURL | None) -> Key:
    """A new active key, saved before anything can use it, then registered if `url` is given."""
    key = keyring.generate(activate=True)
    # Saved first: a key must never encrypt a row before it is safely on disk.
    keyring.save()
    if url is not None:
        register_keys(keyring, url)
    return key


def register_keys(keyring: Keyring, url: DatabaseURL) -> list[str]:
    """Register every key of the keyring that is not retired; the ids newly registered."""
    added = []
    with registry.acting_as(url, registry.OWNER) as conn:
        for key in keyring.readable_keys:
            if registry.register(conn, key):
                added.append(key.id)
    return added


@dataclass(frozen=True)
class KeyStatus:
    id: str | None  # None: plaintext rows from before encryption
    in_keyring: str  # active, previous, retired or "missing"
    registered: str  # "yes", "retired", or "no"
    rows: int


def key_status(keyring: Keyring | None, url: DatabaseURL) -> list[KeyStatus]:
    with registry.acting_as(url, registry.ROTATOR) as conn:
        known = registry.registered(conn)
        counts = registry.rows_per_key(conn)
    in_keyring = {key.id: key.status for key in keyring.keys} if keyring else {}
    ids = sorted(set(in_keyring) | set(known) | {k for k in counts if k is not None})
    out = []
    for key_id in ids:
        reg = known.get(key_id)
        out.append(
            KeyStatus(
                key_id,
                in_keyring.get(key_id, "missing"),
                "no" if reg is None else ("retired" if reg.retired_at else "yes"),
                counts.get(key_id, 0),
            )
        )
    if counts.get(None):
        out.append(KeyStatus(None, "-", "-", counts[None]))
    return out


def retire_key(keyring: Keyring, url: DatabaseURL, key_id: str) -> None:
    """Retire `key_id` in the registry and the keyring; refused while any row uses it."""
    key = keyring.get(key_id)
    if key.status == "active":
        raise ChatsecError(
            f"key {key_id} is the active key: run chatsec keys rotate first, then retire it"
        )
    with registry.acting_as(url, registry.OWNER) as conn:
        # Marked first, counted after in the same transaction: from the commit on the
        # trigger refuses new rows under this key, so none can slip in after the count.
        registry.mark_retired(conn, key_id)
        used = registry.rows_per_key(conn).get(key_id, 0)
        if used:
            raise ChatsecError(
                f"key {key_id} still encrypts {used} message(s): run chatsec keys rotate first"
            )
    keyring.retire(key_id)
    keyring.save()
