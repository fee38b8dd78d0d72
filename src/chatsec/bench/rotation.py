"""`chatsec keys rotate` over the whole table against its two floors, batch by batch.

The rotation is chatsec.keys.rotate.rotate (what `chatsec keys rotate --no-vacuum`
runs) re-encrypting every row of chat.messages to a new key, which was generated and
registered first (`chatsec keys generate`, the documented order, so the application
already writes with it and one pass finishes the table). After each of its batches,
through its progress hook, the floor rewrites the next batch of the plain copy
(chatsec.bench.floor): the same keyset selection over the primary key, the same batch
size, `content = content` and a new key_id, no crypto, each batch a committed
transaction. So the two walk their tables in lockstep, alternating batch by batch, and
whatever the machine does meanwhile lands on both. Each side's time is the sum of its
own batches.

The second floor is the crypto alone: after each floor batch, its rows (those holding
ciphertext) are decrypted and encrypted again with bare pgcrypto -
pgp_sym_encrypt(pgp_sym_decrypt(dearmor(content), key), key, the trigger's options),
nothing written - and read without crypto; the difference is the crypto's time.
Target: what rotation costs per row above the no-crypto floor is at most 1.2 times that.

Meanwhile the application posts one message per transaction (a short idle window
first): its insert latency idle and during the rotation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psycopg

from chatsec.app import create_app_engine, user_transaction
from chatsec.app.chat import post_message
from chatsec.bench import checks
from chatsec.bench.floor import TABLE
from chatsec.bench.sample import SampledUser
from chatsec.bench.stats import num, summarize
from chatsec.bench.target import Logins
from chatsec.db.connect import connect
from chatsec.identity import Signer
from chatsec.keys.keyring import Keyring
from chatsec.keys.manage import generate_key
from chatsec.keys.rotate import rotate

_FIRST_ID = "00000000-0000-0000-0000-000000000000"
FLOOR_KEY_ID = "bench-floor"
# The keyset batch of chatsec.keys.rotate, on the copy.
_FLOOR_IDS = f"""
SELECT id FROM {TABLE}
 WHERE key_id IS DISTINCT FROM %(key_id)s AND id > %(last)s
 ORDER BY id LIMIT %(n)s
"""
_FLOOR_WRITE = f"""
UPDATE {TABLE} SET content = content, key_id = %(key_id)s
 WHERE id = ANY(%(ids)s) AND key_id IS DISTINCT FROM %(key_id)s
"""
_CIPHERTEXT = "content LIKE '-----BEGIN PGP MESSAGE-----%%'"
_CRYPTO = f"""
SELECT count(extensions.pgp_sym_encrypt(
         extensions.pgp_sym_decrypt(extensions.dearmor(content), %(key)s),
         %(key)s, 'cipher-algo=aes256, s2k-mode=1'))
  FROM {TABLE} WHERE id = ANY(%(ids)s) AND {_CIPHERTEXT}
"""
_READ = f"SELECT count(content) FROM {TABLE} WHERE id = ANY(%(ids)s) AND {_CIPHERTEXT}"


@dataclass
class Floor:
    """The plain copy's keyset rewrite, one batch per step, and the bare crypto of it."""

    conn: psycopg.Connection[Any]
    batch: int
    key: str  # the key the copy's ciphertext is under
    last: str = _FIRST_ID
    done: bool = False
    batch_ms: list[float] = field(default_factory=list)
    rows: int = 0
    crypto_ms: float = 0.0
    read_ms: float = 0.0
    crypto_rows: int = 0

    def step(self) -> bool:
        """One batch; False once the copy is done."""
        if self.done:
            return False
        start = time.perf_counter()
        with self.conn.transaction():
            params = {"key_id": FLOOR_KEY_ID, "last": self.last, "n": self.batch}
            ids = [r[0] for r in self.conn.execute(_FLOOR_IDS, params).fetchall()]
            if ids:
                cur = self.conn.execute(_FLOOR_WRITE, {"ids": ids, "key_id": FLOOR_KEY_ID})
                self.rows += max(cur.rowcount, 0)
        if not ids:
            self.done = True
            return False
        self.batch_ms.append((time.perf_counter() - start) * 1000.0)
        self.last = str(ids[-1])
        self._crypto(ids)
        return True

    def _crypto(self, ids: list[Any]) -> None:
        params = {"ids": ids, "key": self.key}
        start = time.perf_counter()
        self.conn.execute(_CRYPTO, params).fetchone()
        crypto = time.perf_counter()
        row = self.conn.execute(_READ, params).fetchone()
        read = time.perf_counter()
        self.crypto_ms += (crypto - start) * 1000.0
        self.read_ms += (read - crypto) * 1000.0
        self.crypto_rows += int(row[0]) if row else 0


@dataclass
class Lockstep:
    """The rotation's hooks: time each of its batches, then run one floor batch."""

    floor: Floor
    mark: float = 0.0
    done: int = 0
    batch_ms: list[float] = field(default_factory=list)
    started: float | None = None
    ended: float | None = None
    floor_steps_during: int = 0

    def on_start(self, key_id: str, generated: bool, left: int) -> None:
        self.started = self.mark = time.perf_counter()

    def on_progress(self, done: int, left: int) -> None:
        now = time.perf_counter()
        # A call without new rows is the end of a pass (a recount), not a batch.
        if done > self.done:
            self.batch_ms.append((now - self.mark) * 1000.0)
            self.done = done
            self.ended = now
            if self.floor.step():
                self.floor_steps_during += 1
        self.mark = time.perf_counter()


class Inserter(threading.Thread):
    """The application posting one message per transaction, as fast as it can, timed."""

    def __init__(self, url: str, keyring: Keyring, identity: Signer, user: SampledUser) -> None:
        super().__init__(daemon=True)
        self.url, self.keyring, self.identity, self.user = url, keyring, identity, user
        self.samples: list[tuple[float, float]] = []  # (start, ms)
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        engine = create_app_engine(self.url, identity=self.identity)
        try:
            while not self.stop.is_set():
                start = time.perf_counter()
                with user_transaction(engine, self.user.user_id, self.keyring) as c:
                    post_message(c, self.user.thread_id, "posted while rotating")
                self.samples.append((start, (time.perf_counter() - start) * 1000.0))
                time.sleep(0.002)
        except BaseException as exc:  # reported by the caller, never swallowed
            self.error = exc
        finally:
            engine.dispose()


def rotation_cost(
    logins: Logins,
    keyring: Keyring,
    identity: Signer,
    user: SampledUser,
    batch: int,
    idle_seconds: float = 2.0,
) -> dict[str, Any]:
    """Rotate every row to a new key, the floor in lockstep; `keyring` gets the new key."""
    old_key = keyring.active.material  # every row of the copy is under it
    generate_key(keyring, logins.migrator)
    # The inserter's own copy of the keyring (with the new key active): rotate() reloads
    # the one it is given, which must not change under another thread.
    inserter = Inserter(logins.app.libpq, Keyring.load(keyring.path), identity, user)
    with connect(logins.admin, autocommit=True, application_name="chatsec bench floor") as conn:
        floor = Floor(conn, batch, old_key)
        lockstep = Lockstep(floor)
        inserter.start()
        try:
            time.sleep(idle_seconds)
            result = rotate(
                keyring,
                logins.migrator,
                batch_size=batch,
                vacuum=False,
                on_start=lockstep.on_start,
                on_progress=lockstep.on_progress,
            )
        finally:
            inserter.stop.set()
            inserter.join()
        if inserter.error is not None:
            raise inserter.error
        after = 0
        while floor.step():  # the copy's batches the rotation did not pair with
            after += 1
    if lockstep.started is None or lockstep.ended is None:
        raise RuntimeError("the rotation rewrote no row")
    return _report(result.rows, result.passes, result.generated, batch, lockstep, after, inserter)


def _report(
    rows: int,
    passes: int,
    generated: bool,
    batch: int,
    lockstep: Lockstep,
    floor_after: int,
    inserter: Inserter,
) -> dict[str, Any]:
    floor = lockstep.floor
    assert lockstep.started is not None and lockstep.ended is not None
    rotate_s = sum(lockstep.batch_ms) / 1000.0
    floor_s = sum(floor.batch_ms) / 1000.0
    rotate_us = rotate_s * 1e6 / rows if rows else float("inf")
    floor_us = floor_s * 1e6 / floor.rows if floor.rows else float("inf")
    crypto_us = (
        (floor.crypto_ms - floor.read_ms) * 1000.0 / floor.crypto_rows
        if floor.crypto_rows
        else float("inf")
    )
    to_floor = checks.ratio(floor_us, rotate_us)  # throughput: rotation rows/s / floor's
    overhead = checks.ratio(rotate_us - floor_us, crypto_us)
    t0, t1 = lockstep.started, lockstep.ended
    idle = [ms for t, ms in inserter.samples if t < t0]
    during = [ms for t, ms in inserter.samples if t0 <= t <= t1]
    return {
        "batch": batch,
        "rows": rows,
        "passes": passes,
        "key_generated_by_rotate": generated,
        "seconds": round(rotate_s, 3),
        "wall_seconds": round(t1 - t0, 3),
        "rows_per_s": round(rows / rotate_s) if rotate_s else 0,
        "us_per_row": num(rotate_us, 3),
        "batch_ms": summarize(lockstep.batch_ms).to_json(),
        "floor": {
            "rows": floor.rows,
            "seconds": round(floor_s, 3),
            "rows_per_s": round(floor.rows / floor_s) if floor_s else 0,
            "us_per_row": num(floor_us, 3),
            "batch_ms": summarize(floor.batch_ms or [0.0]).to_json(),
            "batches_in_lockstep": lockstep.floor_steps_during,
            "batches_after_rotation": floor_after,
        },
        "bare_crypto": {
            "rows": floor.crypto_rows,
            "crypto_seconds": round(floor.crypto_ms / 1000.0, 3),
            "read_seconds": round(floor.read_ms / 1000.0, 3),
            "us_per_row": num(crypto_us, 3),
        },
        "ratio_to_floor": num(to_floor, 3),
        "crypto_overhead_ratio": num(overhead, 3),
        "app_insert_idle_ms": summarize(idle or [0.0]).to_json(),
        "app_insert_during_rotation_ms": summarize(during or [0.0]).to_json(),
        "checks": [
            checks.at_least("rotation.ratio_to_floor", to_floor, checks.ROTATION_FLOOR).to_json(),
            checks.at_most(
                "rotation.crypto_overhead_ratio", overhead, checks.ROTATION_CRYPTO
            ).to_json(),
        ],
    }
