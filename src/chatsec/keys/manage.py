"""What `chatsec keys generate | register | status | retire` do, without the CLI.

Every change runs inside `changing()`: the keyring's file lock, then the database's
lock, then the keyring read again from disk, so two commands never interleave their
read-modify-writes of either.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

from chatsec.db.lock import database_lock
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Key, Keyring


@contextmanager
def changing(
    keyring: Keyring, url: DatabaseURL | None, command: str, wait_s: float | None = None
) -> Iterator[None]:
    """Exclusive right to change `keyring` and the key registry of `url`'s database.

    Always the file lock first, then the database's: no two commands can each hold
    the lock the other waits for. Each wait is bounded by `wait_s`.
    """
    db_lock = database_lock(url, command, wait_s) if url is not None else nullcontext()
    with keyring.locked(wait_s, command), db_lock:
        keyring.reload()
        yield


def check_keyring(keyring: Keyring, url: DatabaseURL) -> None:
    """Refuse a keyring older than the newest one saved for this database (nothing changed)."""
    with registry.acting_as(url, registry.OWNER) as conn:
        newest = registry.keyring_generation(conn)
    keyring.require_generation_at_least(newest, source=f"the registry of {url.target}")


def _record(keyring: Keyring, url: DatabaseURL) -> None:
    with registry.acting_as(url, registry.OWNER) as conn:
        registry.record_keyring_generation(conn, keyring.generation)


def _check_new_keyring(keyring: Keyring, url: DatabaseURL, new_keyring: bool) -> None:
    """A keyring never saved, for a database that has keys: the old keyring is lost.

    A new key cannot read a single existing row; say so, and go on only when told
    (`--new-keyring`), continuing the registry's generations.
    """
    with registry.acting_as(url, registry.OWNER) as conn:
        newest = registry.keyring_generation(conn)
        known = registry.registered(conn)
        encrypted = sum(n for key_id, n in registry.rows_per_key(conn).items() if key_id)
    if keyring.generation or keyring.keys or not (known or encrypted or newest):
        keyring.require_generation_at_least(newest, source=f"the registry of {url.target}")
        return
    if not new_keyring:
        raise ChatsecError(
            f"keyring {keyring.path} is new, but {url.target} has {len(known)} registered "
            f"key(s) and {encrypted} encrypted message(s): a new key cannot decrypt any of "
            "them; restore the lost keyring from its backup (docs/keyring.md), or pass "
            "--new-keyring to start over and leave those messages unreadable"
        )
    keyring.continue_generations(newest)


def last_rotation(url: DatabaseURL) -> registry.Rotation | None:
    """The rotation in progress, else the last one finished (None: never rotated)."""
    with registry.acting_as(url, registry.OWNER) as conn:
        return registry.rotation(conn)


def _unfinished_rotation(url: DatabaseURL) -> registry.Rotation | None:
    current = last_rotation(url)
    return current if current is not None and not current.finished else None


def pending_key(keyring: Keyring) -> Key | None:
    """The key a killed generate or rotate saved but never activated: reuse it.

    Keys are appended and a new key is activated only once registered, so it is the
    keyring's last key, still previous (registered or not: the kill decides).
    """
    if keyring.keys and keyring.keys[-1].status == "previous":
        return keyring.keys[-1]
    return None


PhaseHook = Callable[[str], None]


def introduce_key(
    keyring: Keyring,
    url: DatabaseURL,
    start_rotation: bool = False,
    on_phase: PhaseHook | None = None,
) -> Key:
    """A new active key: saved as previous, registered, then activated and saved again.

    In that order an application that reloads the keyring at any moment either still
    writes with the old key or with one the database already accepts. With
    `start_rotation`, the rotation to it is recorded in the same transaction that
    registers it. The caller holds `changing()`. `on_phase` hears "key-saved" and
    "key-registered" as each step is done.
    """
    key = pending_key(keyring)
    if key is None:
        key = keyring.generate(activate=False)
        # Saved first: a key must never encrypt a row before it is safely on disk.
        keyring.save()
    if on_phase:
        on_phase("key-saved")
    with registry.acting_as(url, registry.OWNER) as conn:
        for readable in keyring.readable_keys:
            registry.register(conn, readable)
        if start_rotation:
            registry.start_rotation(conn, key.id)
        registry.record_keyring_generation(conn, keyring.generation)
    if on_phase:
        on_phase("key-registered")
    keyring.activate(key.id)
    keyring.save()
    _record(keyring, url)
    return key


def generate_key(
    keyring: Keyring,
    url: DatabaseURL | None,
    wait_s: float | None = None,
    new_keyring: bool = False,
    on_phase: PhaseHook | None = None,
) -> Key:
    """A new active key; registered before it is active in the file if `url` is given.

    Without `url` (`--no-register`) the key is active at once: register it before any
    application gets the keyring. Refused while a rotation is unfinished: the rotation
    would lose its target key.
    """
    with changing(keyring, url, "keys generate", wait_s):
        if url is None:
            key = keyring.generate(activate=True)
            keyring.save()
            return key
        _check_new_keyring(keyring, url, new_keyring)
        current = _unfinished_rotation(url)
        if current is not None:
            raise ChatsecError(
                f"a rotation to key {current.key_id} is unfinished in {url.target} "
                f"(phase {current.phase}): run chatsec keys rotate to finish it first"
            )
        return introduce_key(keyring, url, on_phase=on_phase)


def register_keys(keyring: Keyring, url: DatabaseURL, wait_s: float | None = None) -> list[str]:
    """Register every key of the keyring that is not retired; the ids newly registered."""
    with changing(keyring, url, "keys register", wait_s):
        return register_unlocked(keyring, url)


def register_unlocked(keyring: Keyring, url: DatabaseURL) -> list[str]:
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


def retire_key(
    keyring: Keyring, url: DatabaseURL, key_id: str, wait_s: float | None = None
) -> None:
    """Retire `key_id` in the registry and the keyring; refused while any row uses it.

    Everything that can be checked is checked before anything changes: the key is in
    the keyring, not the active key, registered and not retired yet. Then the registry
    marks it retired (from that commit on the trigger refuses new rows under it), every
    transaction open at that moment is waited out (one may have passed the trigger's
    check already), and its rows are counted: any row and the mark is taken back.
    """
    with changing(keyring, url, "keys retire", wait_s):
        _retire_key(keyring, url, key_id)


def _retire_key(keyring: Keyring, url: DatabaseURL, key_id: str) -> None:
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


def unretire_key(
    keyring: Keyring, url: DatabaseURL, key_id: str, wait_s: float | None = None
) -> None:
    """Bring a retired key back to previous (readable again) while the keyring still has it.

    For rows found under a key after it was retired, and for restoring an older backup
    on purpose. Refused once the key was purged: its material is gone.
    """
    with changing(keyring, url, "keys unretire", wait_s):
        _unretire_key(keyring, url, key_id)


def _unretire_key(keyring: Keyring, url: DatabaseURL, key_id: str) -> None:
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


def purge_key(keyring: Keyring, url: DatabaseURL, key_id: str, wait_s: float | None = None) -> None:
    """Destroy a retired key's material in the keyring (crypto-shredding); keep its record.

    Refused unless the key is retired in the keyring and the registry and no row of
    this database uses it. Rows under it in older backups become unreadable for good:
    that is the point.
    """
    with changing(keyring, url, "keys purge", wait_s):
        _purge_key(keyring, url, key_id)


def _purge_key(keyring: Keyring, url: DatabaseURL, key_id: str) -> None:
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
