"""A realistic chat generated set-based, as the superuser, messages encrypted by the trigger.

Skew: thread i (1 = busiest) receives a message with probability growing like
(i/T)^(1/3) - `floor(T * random()^3)` - so a few threads hold tens of thousands of
messages and most hold a handful, as in real chats. Participants per thread are
2 + floor(30 * random()^4): mostly direct and small group chats, a few large rooms.
Every message's author is a participant of its thread.

The superuser writes because FORCE ROW LEVEL SECURITY does not bind it (one INSERT
... SELECT per table instead of a transaction per user), while the encryption trigger
still fires: the session carries a registered key (set_config, like chatsec.app).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import psycopg

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.keys.keyring import Key, Keyring
from chatsec.keys.registry import register

Conn = psycopg.Connection[Any]


@dataclass(frozen=True)
class Scale:
    users: int = 10_000
    threads: int = 20_000
    messages: int = 1_000_000
    # Rows written under the older key, re-encrypted by the rotation benchmark.
    rotate_rows: int = 100_000
    workers: int = 2


# Deterministic ids (md5 of a counter) so that set-based statements can refer to
# "user n" and "thread n" without a lookup, while the ids still look random to indexes.
_USERS = """
INSERT INTO chat.users (id, email, username, first_name, last_name, profile_image, created_at)
SELECT md5('u' || g)::uuid, 'user' || g || '@example.com', 'user_' || g,
       'First' || g, 'Last' || g,
       CASE WHEN g %% 3 = 0 THEN NULL ELSE 'https://img.example.com/u/' || g || '.png' END,
       now() - interval '400 days'
  FROM generate_series(1, %(users)s::int) g
"""
_THREADS = """
INSERT INTO chat.threads (id, name, is_direct, created_by, created_at)
SELECT md5('t' || g)::uuid, 'thread ' || g, false, NULL, now() - interval '380 days'
  FROM generate_series(1, %(threads)s::int) g
"""
# bench_tp numbers each thread's participants 1..k, so a message can pick its
# author as participant number floor(random() * k) + 1.
_PARTICIPANTS = """
CREATE UNLOGGED TABLE bench_tp AS
SELECT thread_n, user_n, row_number() OVER (PARTITION BY thread_n ORDER BY user_n) AS k
  FROM (SELECT DISTINCT t.g AS thread_n, 1 + floor(random() * %(users)s)::int AS user_n
          FROM generate_series(1, %(threads)s::int) t(g),
               LATERAL generate_series(1, 2 + floor(30 * random() ^ 4)::int + (t.g * 0)) p(j)
       ) x;
CREATE UNIQUE INDEX ON bench_tp (thread_n, k);
CREATE UNLOGGED TABLE bench_tsize AS
SELECT thread_n, count(*)::int AS k FROM bench_tp GROUP BY thread_n;
CREATE UNIQUE INDEX ON bench_tsize (thread_n);
INSERT INTO chat.thread_participants (thread_id, user_id, role, joined_at)
SELECT md5('t' || thread_n)::uuid, md5('u' || user_n)::uuid,
       CASE WHEN k = 1 THEN 'owner' ELSE 'member' END, now() - interval '370 days'
  FROM bench_tp;
UPDATE chat.threads t SET is_direct = true
  FROM bench_tsize s WHERE t.id = md5('t' || s.thread_n)::uuid AND s.k = 2;
"""
# Messages g in [lo, hi]: a skewed thread, a participant of it as author, a time in
# the last year, 20-200 characters of text.
_MESSAGES = """
INSERT INTO chat.messages (thread_id, user_id, content, created_at, updated_at)
SELECT md5('t' || x.thread_n)::uuid, md5('u' || tp.user_n)::uuid, x.content, x.at, x.at
  FROM (SELECT g, 1 + floor(%(threads)s * random() ^ 3)::int AS thread_n, random() AS r,
               left('message ' || g || ' ' || repeat(md5(g::text) || ' ', 7),
                    20 + floor(random() * 180)::int) AS content,
               now() - random() * interval '365 days' AS at
          FROM generate_series(%(lo)s::int, %(hi)s::int) g) x
  JOIN bench_tsize s ON s.thread_n = x.thread_n
  JOIN bench_tp tp ON tp.thread_n = x.thread_n AND tp.k = 1 + floor(x.r * s.k)::int
"""
_FINISH = """
UPDATE chat.threads t SET last_message_at = x.last_at
  FROM (SELECT thread_id, max(created_at) AS last_at FROM chat.messages GROUP BY thread_id) x
 WHERE t.id = x.thread_id;
UPDATE chat.thread_participants
   SET last_read_at = CASE WHEN random() < 0.2 THEN NULL
                           ELSE now() - random() * interval '60 days' END;
INSERT INTO chat.attachments (message_id, file_name, content_type, byte_size, storage_key)
SELECT m.id, 'file.png', 'image/png', 1000 + floor(random() * 100000)::int,
       's3://bench/' || m.id || '/' || g
  FROM chat.messages m TABLESAMPLE BERNOULLI (3), generate_series(1, 2) g
 WHERE g = 1 OR random() < 0.3;
DROP TABLE bench_tp;
DROP TABLE bench_tsize;
"""


def run_script(conn: Conn, script: str, params: dict[str, object] | None = None) -> None:
    """Statements separated by ";" + newline, each run on its own (the extended protocol
    that carries bind parameters takes one statement at a time)."""
    for statement in script.split(";\n"):
        if statement.strip():
            conn.execute(statement, params if "%(" in statement else None)


def set_session_keys(conn: Conn, writer: Key, readable: list[Key]) -> None:
    """Keys for this session (is_local = false): the benchmark's own connections only."""
    for name, value in (
        ("app.encryption_key", writer.material),
        ("app.encryption_key_id", writer.id),
        ("app.decryption_keys", json.dumps({k.id: k.material for k in readable})),
    ):
        conn.execute("SELECT pg_catalog.set_config(%s, %s, false)", (name, value))


def _insert_messages(admin: DatabaseURL, scale: Scale, key: Key, lo: int, hi: int) -> None:
    with connect(admin, autocommit=True, application_name="chatsec bench generate") as conn:
        set_session_keys(conn, key, [key])
        conn.execute(_MESSAGES, {"threads": scale.threads, "lo": lo, "hi": hi})


def _chunks(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    if hi < lo:
        return []
    size = -(-(hi - lo + 1) // parts)
    return [(a, min(a + size - 1, hi)) for a in range(lo, hi + 1, size)]


def generate(
    admin: DatabaseURL, scale: Scale, keyring: Keyring, say: Callable[[str], None]
) -> None:
    """Fill the database: users, threads, participants, messages (old key, then active key)."""
    old, active = keyring.readable_keys[1], keyring.active
    with connect(admin, autocommit=True, application_name="chatsec bench generate") as conn:
        for key in (old, active):
            register(conn, key)
        conn.execute(_USERS, {"users": scale.users})
        conn.execute(_THREADS, {"threads": scale.threads})
        run_script(conn, _PARTICIPANTS, {"users": scale.users, "threads": scale.threads})
    say(f"{scale.users} users, {scale.threads} threads and their participants")
    rotate_rows = min(scale.rotate_rows, scale.messages)
    # The trigger's pgcrypto work is CPU-bound and one INSERT uses one core: split the
    # rows over `workers` connections.
    jobs = [(old, lo, hi) for lo, hi in _chunks(1, rotate_rows, scale.workers)]
    jobs += [(active, lo, hi) for lo, hi in _chunks(rotate_rows + 1, scale.messages, scale.workers)]
    with ThreadPoolExecutor(max_workers=scale.workers) as pool:
        for future in [pool.submit(_insert_messages, admin, scale, *job) for job in jobs]:
            future.result()
    say(f"{scale.messages} messages encrypted by the trigger ({rotate_rows} under the older key)")
    with connect(admin, autocommit=True, application_name="chatsec bench generate") as conn:
        run_script(conn, _FINISH)
        # VACUUM sets the visibility map, so counts use index-only scans as in a
        # long-running database; ANALYZE gives the planner the skew.
        conn.execute("VACUUM (ANALYZE)")
    say("last_message_at, read markers, attachments; VACUUM (ANALYZE)")
