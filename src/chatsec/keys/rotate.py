"""Online key rotation: re-encrypt every message under the active key, in small batches.

Each batch is its own short transaction (rows locked only while rewritten), so the
application keeps reading and writing; it holds the previous keys too, so rows under
either key decrypt meanwhile. A rotation is one persisted operation: chat.deployment
records its target key and phase (rewriting, draining, vacuuming, finished) from the
transaction that registers the key on, so a run killed at any moment, VACUUM
included, is finished by the next run with the same key, and only a finished
rotation lets the next one make a new key. Which rows are left the database itself
says (key_id). A row that cannot be decrypted is skipped and listed, never fatal to
the rotation. At the end the previous keys are marked drained: no row left under
them, none accepted, and no transaction is handed them any more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.defaults import DEFAULT_BATCH_SIZE
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Key, Keyring
from chatsec.keys.manage import (
    PhaseHook,
    changing,
    check_keyring,
    introduce_key,
    register_unlocked,
)

# Passes over the table; more than a few means something keeps writing under an old key.
MAX_PASSES = 10
_FIRST_ID = "00000000-0000-0000-0000-000000000000"

# Keyset batch: ids above the last one done, still under another key (or plaintext).
_BATCH_IDS = """
SELECT id FROM chat.messages
 WHERE key_id IS DISTINCT FROM %(active)s AND id > %(last)s
 ORDER BY id LIMIT %(n)s
"""
# Decrypting to plaintext is enough: the trigger encrypts (and binds) it under the
# active key. key_id is checked again under the row lock, so a row changed meanwhile is
# left alone; a row chat.decrypt_message cannot open (NULL, with a WARNING) is not
# written and comes back as skipped.
_REWRITE = """
WITH opened AS (
  SELECT m.id, chat.decrypt_message(m.content, m.key_id, m.id, m.thread_id) AS plain
    FROM chat.messages m
   WHERE m.id = ANY(%(ids)s) AND m.key_id IS DISTINCT FROM %(active)s
     FOR UPDATE
), written AS (
  UPDATE chat.messages m SET content = o.plain
    FROM opened o
   WHERE m.id = o.id AND o.plain IS NOT NULL
  RETURNING m.id
)
SELECT o.id::text, o.plain IS NULL FROM opened o
"""

Progress = Callable[[int, int], None]  # (rows done so far, rows left)


@dataclass(frozen=True)
class RotationResult:
    key_id: str
    generated: bool
    rows: int
    passes: int
    # Rows that held plaintext from before encryption: their old versions survive in
    # the heap until VACUUM FULL, in WAL and in older backups (docs/encryption.md).
    plaintext_rows: int = 0
    skipped: list[str] = field(default_factory=list)  # message ids that could not be opened
    drained: list[str] = field(default_factory=list)  # keys rotated out by this run


def rows_left(counts: dict[str | None, int], active: str) -> int:
    return sum(n for key_id, n in counts.items() if key_id != active)


def _needs_new_key(keyring: Keyring, counts: dict[str | None, int], url: DatabaseURL) -> bool:
    """A rotation starts with a new key when none is active, nothing is left to finish, or
    the active key is one from before revision 0008 (its rows are not bound to them)."""
    active_ids = [key.id for key in keyring.keys if key.status == "active"]
    if not active_ids:
        return True
    with registry.acting_as(url, registry.ROTATOR) as conn:
        known = registry.registered(conn)
    current = known.get(active_ids[0])
    unbound = current is not None and not current.binds_rows
    return unbound or rows_left(counts, active_ids[0]) == 0


def rotate(
    keyring: Keyring,
    url: DatabaseURL,
    batch_size: int = DEFAULT_BATCH_SIZE,
    vacuum: bool = True,
    on_start: Callable[[str, bool, int], None] | None = None,
    on_progress: Progress | None = None,
    vacuum_full: bool = False,
    wait_s: float | None = None,
    on_phase: PhaseHook | None = None,
) -> RotationResult:
    """Finish the unfinished rotation, else start one (with a new key unless rows are left).

    Holds the keyring's and the database's locks throughout (`manage.changing`).
    `on_phase` hears each step once it is recorded: "key-saved" and "key-registered"
    (a new key), then "rewriting", "draining", "vacuuming" and "finished".
    """
    if batch_size < 1:
        raise ChatsecError(f"--batch-size must be at least 1, not {batch_size}")
    with changing(keyring, url, "keys rotate", wait_s):
        check_keyring(keyring, url)
        with registry.acting_as(url, registry.ROTATOR) as conn:
            counts = registry.rows_per_key(conn)
        with registry.acting_as(url, registry.OWNER) as conn:
            current = registry.rotation(conn)
        generated = False
        if current is not None and not current.finished:
            active = _resume(keyring, url, current).id
        elif _needs_new_key(keyring, counts, url):
            active = introduce_key(keyring, url, start_rotation=True, on_phase=on_phase).id
            generated = True
        else:
            # Rows left under older keys (plaintext from before encryption, or a writer
            # with an old keyring): this rotation finishes them with the active key.
            register_unlocked(keyring, url)
            active = keyring.active.id
            with registry.acting_as(url, registry.OWNER) as conn:
                registry.start_rotation(conn, active)
        readable = {key.id for key in keyring.readable_keys}
        unreadable = sorted(
            k for k, n in counts.items() if k is not None and n and k not in readable
        )
        if unreadable:
            raise ChatsecError(
                f"rows are encrypted under key(s) {', '.join(unreadable)} that keyring "
                f"{keyring.path} cannot read: restore those keys before rotating"
            )
        left = rows_left(counts, active)
        if on_start:
            on_start(active, generated, left)
        if on_phase:
            on_phase("rewriting")
        done, passes, skipped, drained = _rewrite(
            keyring, url, active, batch_size, left, on_progress, on_phase
        )
        if vacuum or vacuum_full:
            _set_phase(url, "vacuuming", on_phase)
            vacuum_messages(url, full=vacuum_full)
        _set_phase(url, "finished", on_phase)
    return RotationResult(
        active, generated, done, passes, counts.get(None, 0), sorted(skipped), drained
    )


def _resume(keyring: Keyring, url: DatabaseURL, current: registry.Rotation) -> Key:
    """The unfinished rotation's key, active in the keyring (a run killed between
    registering it and activating it left it previous)."""
    try:
        key = keyring.get(current.key_id)
    except ChatsecError:
        raise ChatsecError(
            f"a rotation to key {current.key_id} is unfinished in {url.target} (phase "
            f"{current.phase}), but keyring {keyring.path} has no such key: use the keyring "
            "that rotation saved"
        ) from None
    if key.status not in ("active", "previous"):
        raise ChatsecError(
            f"a rotation to key {current.key_id} is unfinished in {url.target}, but that key "
            f"is {key.status} in keyring {keyring.path}: use the keyring that rotation saved"
        )
    if key.status == "previous":
        keyring.activate(key.id)
        keyring.save()
        with registry.acting_as(url, registry.OWNER) as conn:
            registry.record_keyring_generation(conn, keyring.generation)
    return keyring.active


def _set_phase(url: DatabaseURL, phase: str, on_phase: PhaseHook | None) -> None:
    with registry.acting_as(url, registry.OWNER) as conn:
        registry.set_rotation_phase(conn, phase)
    if on_phase:
        on_phase(phase)


def _rewrite(
    keyring: Keyring,
    url: DatabaseURL,
    active: str,
    batch_size: int,
    left: int,
    on_progress: Progress | None,
    on_phase: PhaseHook | None,
) -> tuple[int, int, set[str], list[str]]:
    """Passes over chat.messages until no row is left under another key, then the drain:
    rows written, passes, rows that could not be opened, keys drained."""
    done = 0
    passes = 0
    skipped: set[str] = set()
    drained: list[str] = []
    with connect(url, application_name="chatsec-keys-rotate") as conn:
        while True:
            passes += 1
            last = _FIRST_ID
            while True:
                with conn.transaction():
                    registry.set_role(conn, url, registry.ROTATOR)
                    registry.set_keys(conn, keyring)
                    ids = [
                        row[0]
                        for row in conn.execute(
                            _BATCH_IDS, {"active": active, "last": last, "n": batch_size}
                        ).fetchall()
                    ]
                    if not ids:
                        break
                    outcome = conn.execute(_REWRITE, {"ids": ids, "active": active}).fetchall()
                written = sum(1 for _, failed in outcome if not failed)
                skipped |= {str(message_id) for message_id, failed in outcome if failed}
                done += written
                last = str(ids[-1])
                left = max(left - written, 0)
                if on_progress:
                    on_progress(done, left)
            with conn.transaction():
                registry.set_role(conn, url, registry.ROTATOR)
                left = rows_left(registry.rows_per_key(conn), active) - len(skipped)
            if left <= 0:
                # Rows a stale writer slipped in before the previous keys were drained
                # keep their key undrained: one more pass takes them, and once drained
                # a key takes no new rows at all.
                _set_phase(url, "draining", on_phase)
                drained += drain_previous_keys(url, active)
                with conn.transaction():
                    registry.set_role(conn, url, registry.ROTATOR)
                    left = rows_left(registry.rows_per_key(conn), active) - len(skipped)
            if on_progress:
                on_progress(done, left)
            if left <= 0:
                return done, passes, skipped, drained
            if passes >= MAX_PASSES:
                raise ChatsecError(
                    f"{left} row(s) still arrive under old keys after {passes} passes: "
                    f"give the application the keyring with active key {active}, then rerun"
                )


def drain_previous_keys(url: DatabaseURL, active: str) -> list[str]:
    """Mark every registered key but `active` that holds no row as drained; the ones marked.

    Marked first, counted after every transaction open at the mark has ended: from the
    mark on the trigger refuses new rows under them, so the count is final; a key that
    still has rows is unmarked. If open transactions do not end in time, nothing stays
    marked (the keys are simply still sent to transactions) and the rotation stands.
    """
    with registry.acting_as(url, registry.OWNER) as conn:
        known = registry.registered(conn)
        candidates = [
            k.id
            for k in known.values()
            if k.id != active and k.drained_at is None and k.retired_at is None
        ]
        for key_id in candidates:
            registry.set_state(conn, key_id, "drained_at", True)
    if not candidates:
        return []
    try:
        registry.wait_out_open_transactions(url)
    except ChatsecError:
        counts: dict[str | None, int] = {key_id: 1 for key_id in candidates}
    else:
        with registry.acting_as(url, registry.OWNER) as conn:
            counts = registry.rows_per_key(conn)
    with registry.acting_as(url, registry.OWNER) as conn:
        for key_id in candidates:
            if counts.get(key_id):
                registry.set_state(conn, key_id, "drained_at", False)
    return [key_id for key_id in candidates if not counts.get(key_id)]


def vacuum_messages(url: DatabaseURL, full: bool = False) -> None:
    """VACUUM (ANALYZE) as the owner: frees the old ciphertext's space for reuse.

    `full` rewrites the table into a new file and drops the old one (an exclusive lock
    for the duration): the only way the old versions (earlier ciphertext, plaintext from
    before encryption) leave the heap rather than wait to be overwritten.
    """
    # VACUUM cannot run in a transaction block, hence autocommit and a session SET ROLE
    # that ends with this connection.
    with connect(url, autocommit=True, application_name="chatsec-keys-rotate") as conn:
        registry.set_role(conn, url, registry.OWNER, local=False)
        conn.execute(f"VACUUM ({'FULL, ' if full else ''}ANALYZE) chat.messages")
