"""Online key rotation: re-encrypt every message under the active key, in small batches.

Each batch is its own short transaction (rows locked only while rewritten), so the
application keeps reading and writing; it holds the previous keys too, so rows under
either key decrypt meanwhile. Nothing is remembered between runs: the database itself
says which rows are left (key_id), so a run killed at any point is finished by the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Keyring
from chatsec.keys.manage import generate_key, register_keys

DEFAULT_BATCH_SIZE = 500
# Passes over the table; more than a few means something keeps writing under an old key.
MAX_PASSES = 10
_FIRST_ID = "00000000-0000-0000-0000-000000000000"

# Keyset batch: ids above the last one done, still under another key (or plaintext).
_BATCH_IDS = """
SELECT id FROM chat.messages
 WHERE key_id IS DISTINCT FROM %(active)s AND id > %(last)s
 ORDER BY id LIMIT %(n)s
"""
# Decrypting to plaintext is enough: the trigger encrypts it under the active key.
# key_id is checked again under the row lock, so a row changed meanwhile is skipped.
_REWRITE = """
UPDATE chat.messages
   SET content = chat.decrypt_message(content, key_id)
 WHERE id = ANY(%(ids)s) AND key_id IS DISTINCT FROM %(active)s
"""

Progress = Callable[[int, int], None]  # (rows done so far, rows left)


@dataclass(frozen=True)
class RotationResult:
    key_id: str
    generated: bool
    rows: int
    passes: int


def rows_left(counts: dict[str | None, int], active: str) -> int:
    return sum(n for key_id, n in counts.items() if key_id != active)


def rotate(
    keyring: Keyring,
    url: DatabaseURL,
    batch_size: int = DEFAULT_BATCH_SIZE,
    vacuum: bool = True,
    on_start: Callable[[str, bool, int], None] | None = None,
    on_progress: Progress | None = None,
) -> RotationResult:
    """Resume a rotation with rows left under old keys, else start one with a new key."""
    if batch_size < 1:
        raise ChatsecError(f"--batch-size must be at least 1, not {batch_size}")
    with registry.acting_as(url, registry.ROTATOR) as conn:
        counts = registry.rows_per_key(conn)
    active_ids = [key.id for key in keyring.keys if key.status == "active"]
    generated = not active_ids or rows_left(counts, active_ids[0]) == 0
    if generated:
        generate_key(keyring, url)
    else:
        # A run killed before registering its new key leaves it only in the keyring.
        register_keys(keyring, url)
    active = keyring.active.id
    readable = {key.id for key in keyring.readable_keys}
    unreadable = sorted(k for k, n in counts.items() if k is not None and n and k not in readable)
    if unreadable:
        raise ChatsecError(
            f"rows are encrypted under key(s) {', '.join(unreadable)} that keyring "
            f"{keyring.path} cannot read: restore those keys before rotating"
        )
    left = rows_left(counts, active)
    if on_start:
        on_start(active, generated, left)
    done = 0
    passes = 0
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
                    cur = conn.execute(_REWRITE, {"ids": ids, "active": active})
                    done += max(cur.rowcount, 0)
                last = str(ids[-1])
                left = max(left - max(cur.rowcount, 0), 0)
                if on_progress:
                    on_progress(done, left)
            with conn.transaction():
                registry.set_role(conn, url, registry.ROTATOR)
                left = rows_left(registry.rows_per_key(conn), active)
            if on_progress:
                on_progress(done, left)
            if not left:
                break
            if passes >= MAX_PASSES:
                raise ChatsecError(
                    f"{left} row(s) still arrive under old keys after {passes} passes: "
                    f"give the application the keyring with active key {active}, then rerun"
                )
    if vacuum:
        vacuum_messages(url)
    return RotationResult(active, generated, done, passes)


def vacuum_messages(url: DatabaseURL) -> None:
    """VACUUM (ANALYZE) as the owner: frees the old ciphertext's space for reuse."""
    # VACUUM cannot run in a transaction block, hence autocommit and a session SET ROLE
    # that ends with this connection.
    with connect(url, autocommit=True, application_name="chatsec-keys-rotate") as conn:
        registry.set_role(conn, url, registry.OWNER, local=False)
        conn.execute("VACUUM (ANALYZE) chat.messages")
