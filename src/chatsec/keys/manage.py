"""What `chatsec keys generate | register | status | retire` do, without the CLI."""

from __future__ import annotations

from dataclasses import dataclass

from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Key, Keyring


def check_keyring(keyring: Keyring, url: DatabaseURL) -> None:
    """Refuse a keyring older than the newest one saved for this database (nothing changed)."""
    with registry.acting_as(url, registry.OWNER) as conn:
        newest = registry.keyring_generation(conn)
    keyring.require_generation_at_least(newest, source=f"the registry of {url.target}")


def _record(keyring: Keyring, url: DatabaseURL) -> None:
    with registry.acting_as(url, registry.OWNER) as conn:
        registry.record_keyring_generation(conn, keyring.generation)


def generate_key(keyring: Keyring, url: DatabaseURL | None) -> Key:
    """A new active key, saved before anything can use it, then registered if `url` is given."""
    if url is not None:
        check_keyring(keyring, url)
    key = keyring.generate(activate=True)
    # Saved first: a key must never encrypt a row before it is safely on disk.
    keyring.save()
    if url is not None:
        register_keys(keyring, url)
    return key


def register_keys(keyring: Keyring, url: DatabaseURL) -> list[str]:
    """Register every key of the keyring that is not retired; the ids newly registered."""
    check_keyring(keyring, url)
    added = []
    with registry.acting_as(url, registry.OWNER) as conn:
        for key in keyring.readable_keys:
            if registry.register(conn, key):
                added.append(key.id)
        registry.record_keyring_generation(conn, keyring.generation)
    return added


@dataclass(frozen=True)
class KeyStatus:
    id: str | None  # None: plaintext rows from before encryption
    in_keyring: str  # active, previous, retired or "missing"
    registered: str  # "yes", "drained", "retired", "purged", or "no"
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
                _registry_state(reg),
                counts.get(key_id, 0),
            )
        )
    if counts.get(None):
        out.append(KeyStatus(None, "-", "-", counts[None]))
    return out


def _registry_state(reg: registry.Registered | None) -> str:
    if reg is None:
        return "no"
    for state, at in (
        ("purged", reg.purged_at),
        ("retired", reg.retired_at),
        ("drained", reg.drained_at),
    ):
        if at is not None:
            return state
    return "yes"


def retire_key(keyring: Keyring, url: DatabaseURL, key_id: str) -> None:
    """Retire `key_id` in the registry and the keyring; refused while any row uses it.

    Everything that can be checked is checked before anything changes: the key is in
    the keyring, not the active key, registered and not retired yet. Then the registry
    marks it retired (from that commit on the trigger refuses new rows under it), every
    transaction open at that moment is waited out (one may have passed the trigger's
    check already), and its rows are counted: any row and the mark is taken back.
    """
    key = keyring.get(key_id)
    if key.status == "active":
        raise ChatsecError(
            f"key {key_id} is the active key: run chatsec keys rotate first, then retire it"
        )
    if key.status != "previous":
        raise ChatsecError(f"key {key_id} is already {key.status} in keyring {keyring.path}")
    check_keyring(keyring, url)
    with registry.acting_as(url, registry.OWNER) as conn:
        current = registry.registered(conn).get(key_id)
        if current is None:
            raise ChatsecError(f"key {key_id} is not registered in {url.target}")
        if current.retired_at is None:
            registry.set_state(conn, key_id, "retired_at", True)
    try:
        registry.wait_out_open_transactions(url)
        with registry.acting_as(url, registry.OWNER) as conn:
            used = registry.rows_per_key(conn).get(key_id, 0)
        if used:
            raise ChatsecError(
                f"key {key_id} still encrypts {used} message(s): run chatsec keys rotate first"
            )
    except ChatsecError:
        with registry.acting_as(url, registry.OWNER) as conn:
            registry.set_state(conn, key_id, "retired_at", False)
        raise
    keyring.retire(key_id)
    keyring.save()
    _record(keyring, url)


def unretire_key(keyring: Keyring, url: DatabaseURL, key_id: str) -> None:
    """Bring a retired key back to previous (readable again) while the keyring still has it.

    For rows found under a key after it was retired, and for restoring an older backup
    on purpose. Refused once the key was purged: its material is gone.
    """
    key = keyring.get(key_id)
    if key.status != "retired":
        raise ChatsecError(f"key {key_id} is {key.status}, not retired, in keyring {keyring.path}")
    check_keyring(keyring, url)
    with registry.acting_as(url, registry.OWNER) as conn:
        current = registry.registered(conn).get(key_id)
        if current is None:
            raise ChatsecError(f"key {key_id} is not registered in {url.target}")
        if current.purged_at is not None:
            raise ChatsecError(f"key {key_id} was purged in {url.target}: it cannot come back")
        registry.set_state(conn, key_id, "retired_at", False)
    keyring.unretire(key_id)
    keyring.save()
    _record(keyring, url)


def purge_key(keyring: Keyring, url: DatabaseURL, key_id: str) -> None:
    """Destroy a retired key's material in the keyring (crypto-shredding); keep its record.

    Refused unless the key is retired in the keyring and the registry and no row of
    this database uses it. Rows under it in older backups become unreadable for good:
    that is the point.
    """
    key = keyring.get(key_id)
    if key.status != "retired":
        raise ChatsecError(
            f"key {key_id} is {key.status}: only a retired key is purged (chatsec keys retire)"
        )
    check_keyring(keyring, url)
    with registry.acting_as(url, registry.OWNER) as conn:
        current = registry.registered(conn).get(key_id)
        if current is None or current.retired_at is None:
            raise ChatsecError(f"key {key_id} is not retired in {url.target}")
        used = registry.rows_per_key(conn).get(key_id, 0)
        if used:
            raise ChatsecError(f"key {key_id} still encrypts {used} message(s) in {url.target}")
        registry.set_state(conn, key_id, "purged_at", True)
    keyring.purge(key_id)
    keyring.save()
    _record(keyring, url)
