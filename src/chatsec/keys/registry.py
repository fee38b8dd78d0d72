"""chat.encryption_keys: which key ids the database accepts, checked without holding keys.

`chatsec keys` reaches the database with the migrator login and acts as a NOLOGIN
role for each transaction: chat_owner to write the registry, chat_key_rotator to
re-encrypt. Both SET LOCAL, so nothing outlives the transaction.
"""

from __future__ import annotations

import hashlib
import hmac
import time
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
from chatsec.keys.transaction import TRANSACTION_SETTINGS, transaction_parameters

OWNER = "chat_owner"
ROTATOR = "chat_key_rotator"
_VERIFIER_MESSAGE = "chatsec-key-check"
# Version 2 names the key id and the deployment (chat.deployment, revision 0008), so a
# registry entry cannot be moved to another key id or another chat database.
VERIFIER_VERSION = 2
# How long retire and the end of a rotation wait for transactions that were open when
# they changed a key's state (they may still write under that key).
SETTLE_TIMEOUT_S = 60.0

Conn = psycopg.Connection[Any]


def verifier(key: Key, deployment: str | None = None) -> str:
    """HMAC-SHA256 keyed by the key material; the trigger computes the same from its key.

    Version 2 when `deployment` (chat.deployment's id) is given, version 1 (the key
    alone, before revision 0008) when not. Computed here so registering a key never
    sends the key to the server.
    """
    message = _VERIFIER_MESSAGE
    if deployment is not None:
        message += f":v2:{key.id}:{deployment}"
    return hmac.new(key.material.encode(), message.encode(), hashlib.sha256).hexdigest()


def keyring_generation(conn: Conn) -> int:
    """The newest keyring generation `chatsec keys` has saved for this database."""
    row = conn.execute("SELECT keyring_generation FROM chat.deployment").fetchone()
    return int(str(row[0])) if row else 0


def record_keyring_generation(conn: Conn, generation: int) -> None:
    conn.execute(
        "UPDATE chat.deployment SET keyring_generation = GREATEST(keyring_generation, %s::bigint)",
        (generation,),
    )


def deployment_id(conn: Conn) -> str:
    row = conn.execute("SELECT id::text FROM chat.deployment").fetchone()
    if row is None:
        raise ChatsecError("chat.deployment is empty: deploy chatsec's migrations (revision 0008)")
    return str(row[0])


@dataclass(frozen=True)
class Rotation:
    """The latest rotation recorded in chat.deployment (revision 0009)."""

    key_id: str
    phase: str  # rewriting, draining, vacuuming or finished
    started_at: datetime
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.phase == "finished"


ROTATION_PHASES = ("rewriting", "draining", "vacuuming", "finished")


def rotation(conn: Conn) -> Rotation | None:
    """The rotation in progress, else the last one finished; None if none ever ran."""
    try:
        row = conn.execute(
            "SELECT rotation_key_id, rotation_phase, rotation_started_at, rotation_finished_at "
            "FROM chat.deployment"
        ).fetchone()
    except psycopg.errors.UndefinedColumn:
        raise ChatsecError(
            "chat.deployment records no rotation: deploy chatsec's migrations (revision 0009)"
        ) from None
    if row is None or row[0] is None:
        return None
    return Rotation(str(row[0]), str(row[1]), row[2], row[3])


def start_rotation(conn: Conn, key_id: str) -> None:
    conn.execute(
        "UPDATE chat.deployment SET rotation_key_id = %s, rotation_phase = 'rewriting', "
        "rotation_started_at = pg_catalog.now(), rotation_finished_at = NULL",
        (key_id,),
    )


def set_rotation_phase(conn: Conn, phase: str) -> None:
    if phase not in ROTATION_PHASES:
        raise ValueError(phase)
    conn.execute(
        "UPDATE chat.deployment SET rotation_phase = %(phase)s, rotation_finished_at = "
        "CASE WHEN %(phase)s = 'finished' THEN pg_catalog.now() END",
        {"phase": phase},
    )


@dataclass(frozen=True)
class Registered:
    id: str
    created_at: datetime
    retired_at: datetime | None
    drained_at: datetime | None = None
    purged_at: datetime | None = None
    binds_rows: bool = True  # False: registered before revision 0008 bound rows


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
    """The keyring's keys for this transaction, as chatsec.app sets them (one statement)."""
    conn.execute(TRANSACTION_SETTINGS, transaction_parameters(None, keyring))


def register(conn: Conn, key: Key) -> bool:
    """Add `key` to the registry (as chat_owner); False if it was there already.

    A key registered before revision 0008 (verifier version 1) gets its version 2
    verifier here, once the key proves it matches.
    """
    current = verifier(key, deployment_id(conn))
    row = conn.execute(
        "INSERT INTO chat.encryption_keys (id, verifier, verifier_version) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO NOTHING RETURNING id",
        (key.id, current, VERIFIER_VERSION),
    ).fetchone()
    if row is not None:
        return True
    existing = conn.execute(
        "SELECT verifier, verifier_version FROM chat.encryption_keys WHERE id = %s", (key.id,)
    ).fetchone()
    expected = current if existing and existing[1] == VERIFIER_VERSION else verifier(key)
    if existing is None or not hmac.compare_digest(str(existing[0]), expected):
        raise ChatsecError(
            f"key id {key.id} is registered in the database with a different key: "
            "this keyring does not belong to this database"
        )
    if existing[1] != VERIFIER_VERSION:
        conn.execute(
            "UPDATE chat.encryption_keys SET verifier = %s, verifier_version = %s WHERE id = %s",
            (current, VERIFIER_VERSION, key.id),
        )
    return False


def registered(conn: Conn) -> dict[str, Registered]:
    rows = conn.execute(
        "SELECT id, created_at, retired_at, drained_at, purged_at, binds_rows "
        "FROM chat.encryption_keys ORDER BY id"
    ).fetchall()
    return {str(r[0]): Registered(str(r[0]), r[1], r[2], r[3], r[4], bool(r[5])) for r in rows}


def rows_per_key(conn: Conn) -> dict[str | None, int]:
    """Messages per key id; None counts plaintext rows from before encryption."""
    rows = conn.execute("SELECT key_id, rows FROM chat.encryption_summary()").fetchall()
    return {None if r[0] is None else str(r[0]): int(r[1]) for r in rows}


def set_state(conn: Conn, key_id: str, column: str, on: bool) -> None:
    """Set (now) or clear one of the registry's state times: retired_at, drained_at, purged_at."""
    if column not in {"retired_at", "drained_at", "purged_at"}:
        raise ValueError(column)
    value = sql.SQL("pg_catalog.now()" if on else "NULL")
    conn.execute(
        sql.SQL("UPDATE chat.encryption_keys SET {} = {} WHERE id = %s").format(
            sql.Identifier(column), value
        ),
        (key_id,),
    )


# Every transaction holds a lock on its own virtual transaction id until it ends.
_OPEN_TRANSACTIONS = """
SELECT l.virtualxid, l.pid FROM pg_catalog.pg_locks l
  JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'virtualxid' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
   AND a.datname = pg_catalog.current_database()
"""


def wait_out_open_transactions(url: DatabaseURL, timeout_s: float | None = None) -> None:
    """Return once every transaction open in the database now has ended.

    After a key is marked retired or drained and that committed, writers that start
    later see it (the trigger then refuses the key); writers already in a transaction
    may have passed the trigger's check, or hold a snapshot from before. Once they have
    all ended, nothing more can arrive under the key, so counting its rows is final.
    """
    timeout_s = SETTLE_TIMEOUT_S if timeout_s is None else timeout_s
    with connect(url, autocommit=True, application_name="chatsec-keys") as conn:
        waiting = {str(v): int(str(p)) for v, p in conn.execute(_OPEN_TRANSACTIONS).fetchall()}
        deadline = time.monotonic() + timeout_s
        while waiting:
            still = {str(v) for v, _ in conn.execute(_OPEN_TRANSACTIONS).fetchall()}
            waiting = {v: p for v, p in waiting.items() if v in still}
            if not waiting:
                return
            if time.monotonic() > deadline:
                pids = ", ".join(str(p) for p in sorted(set(waiting.values())))
                raise ChatsecError(
                    f"transactions open for more than {timeout_s:g} s in {url.target} "
                    f"(backend pids {pids}) may still write under the key: retry once they end"
                )
            time.sleep(0.05)
