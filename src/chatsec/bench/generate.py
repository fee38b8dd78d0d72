"""A realistic chat generated set-based, as the superuser, messages encrypted by the trigger.

Skew, as in the chat the issue measured (2,000 users, 20,000 threads, 1M messages):
- threads: 15 % of the messages go to the 10 hottest threads (about 10 threads over
  10,000 messages at 1M), the rest by `floor(T * random()^3)` (thread i receives a
  message with probability growing like (i/T)^(1/3)): a few threads hold tens of
  thousands of messages and most hold a handful, as in real chats;
- participants per thread: 2 + floor(30 * random()^4), mostly direct and small group
  chats, a few large rooms; who: `floor(U * random()^1.15)`, so the heaviest user is
  in about 2.7 times as many threads as the median one (~200 against ~75 at 1M);
- about 5 % of the messages have attachments (one, 30 % of those a second one).
Every message's author is a participant of its thread.

Deterministic: users, threads and messages have md5 ids of their number, and every
statement that draws random numbers runs after setseed() from `Scale.seed`, so one
seed gives the same chat (but for timestamps, relative to now()).

The superuser writes because FORCE ROW LEVEL SECURITY does not bind it (one INSERT
... SELECT per table instead of a transaction per user), while the encryption trigger
still fires: the session carries a registered key (set_config, like chatsec.app).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from chatsec.bench.config import Scale
from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.keys.keyring import Key, Keyring
from chatsec.keys.registry import register

Conn = psycopg.Connection[Any]


# Share of the messages that go to the HOT_THREADS hottest threads.
HOT_SHARE = 0.15
HOT_THREADS = 10
# Participants are user floor(U * random()^USER_SKEW): > 1 makes low numbers busier.
USER_SKEW = 1.15
ATTACHMENT_PERCENT = 5


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
  FROM (SELECT DISTINCT t.g AS thread_n, 1 + floor(%(users)s * random() ^ %(user_skew)s)::int AS user_n
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
INSERT INTO chat.messages (id, thread_id, user_id, content, created_at, updated_at)
SELECT md5('m' || x.g)::uuid, md5('t' || x.thread_n)::uuid, md5('u' || tp.user_n)::uuid,
       x.content, x.at, x.at
  FROM (SELECT g,
               1 + CASE WHEN random() < %(hot_share)s
                        THEN floor(least(%(hot)s, %(threads)s) * random())
                        ELSE floor(%(threads)s * random() ^ 3) END::int AS thread_n,
               random() AS r,
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
  FROM chat.messages m TABLESAMPLE BERNOULLI (%(attachment_percent)s) REPEATABLE (%(seed)s),
       generate_series(1, 2) g
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


def seed_session(conn: Conn, seed: int, salt: int) -> None:
    """setseed() for this session: the same (seed, salt) draws the same random numbers."""
    value = ((seed * 1_000_003 + salt) % 2_000_001) / 1_000_000.0 - 1.0  # in [-1, 1]
    conn.execute("SELECT setseed(%s)", (value,))


def _insert_messages(
    admin: DatabaseURL, scale: Scale, key: Key, lo: int, hi: int, opened: list[Conn]
) -> None:
    with connect(admin, autocommit=True, application_name="chatsec bench generate") as conn:
        opened.append(conn)  # for the main thread to cancel on Ctrl-C
        set_session_keys(conn, key, [key])
        seed_session(conn, scale.seed, lo)
        conn.execute(
            _MESSAGES,
            {
                "threads": scale.threads,
                "lo": lo,
                "hi": hi,
                "hot": HOT_THREADS,
                "hot_share": HOT_SHARE,
            },
        )


def _chunks(lo: int, hi: int, parts: int) -> list[tuple[int, int]]:
    if hi < lo:
        return []
    size = -(-(hi - lo + 1) // parts)
    return [(a, min(a + size - 1, hi)) for a in range(lo, hi + 1, size)]


def generate(
    admin: DatabaseURL, scale: Scale, keyring: Keyring, say: Callable[[str], None]
) -> None:
    """Fill the database: users, threads, participants, messages under the active key."""
    key = keyring.active
    with connect(admin, autocommit=True, application_name="chatsec bench generate") as conn:
        register(conn, key)
        conn.execute(_USERS, {"users": scale.users})
        conn.execute(_THREADS, {"threads": scale.threads})
        seed_session(conn, scale.seed, 0)
        run_script(
            conn,
            _PARTICIPANTS,
            {"users": scale.users, "threads": scale.threads, "user_skew": USER_SKEW},
        )
    say(f"{scale.users} users, {scale.threads} threads and their participants")
    # The trigger's pgcrypto work is CPU-bound and one INSERT uses one core: split the
    # rows over `workers` connections (each chunk seeded by its first message number).
    jobs = _chunks(1, scale.messages, scale.workers)
    opened: list[Conn] = []
    with ThreadPoolExecutor(max_workers=scale.workers) as pool:
        futures = [pool.submit(_insert_messages, admin, scale, key, *job, opened) for job in jobs]
        try:
            for future in futures:
                future.result()
        except KeyboardInterrupt:
            # Ctrl-C reaches this thread only: cancel the workers' statements, or leaving
            # the pool would wait minutes for their INSERTs to finish.
            for conn in opened:
                conn.cancel_safe(timeout=2.0)
            raise
    say(f"{scale.messages} messages encrypted by the trigger")
    with connect(admin, autocommit=True, application_name="chatsec bench generate") as conn:
        seed_session(conn, scale.seed, -1)
        run_script(conn, _FINISH, {"attachment_percent": ATTACHMENT_PERCENT, "seed": scale.seed})
        # VACUUM sets the visibility map, so counts use index-only scans as in a
        # long-running database; ANALYZE gives the planner the skew.
        conn.execute("VACUUM (ANALYZE)")
    say("last_message_at, read markers, attachments; VACUUM (ANALYZE)")


_DESCRIBE = """
WITH per_thread AS (SELECT thread_id, count(*) AS n FROM chat.messages GROUP BY thread_id),
     per_user AS (SELECT user_id, count(*) AS n FROM chat.thread_participants GROUP BY user_id)
SELECT (SELECT count(*) FROM chat.users),
       (SELECT count(*) FROM chat.threads),
       (SELECT count(*) FROM chat.messages),
       (SELECT count(DISTINCT message_id) FROM chat.attachments),
       (SELECT count(*) FROM per_thread WHERE n > 10000),
       (SELECT COALESCE(array_agg(n ORDER BY n DESC), '{}') FROM
          (SELECT n FROM per_thread ORDER BY n DESC LIMIT 10) top),
       (SELECT COALESCE(max(n), 0) FROM per_user),
       (SELECT COALESCE(percentile_disc(0.5) WITHIN GROUP (ORDER BY n), 0) FROM per_user)
"""


def describe(admin: DatabaseURL) -> dict[str, object]:
    """What the generated chat holds: counts, attachments, the skew actually obtained."""
    with connect(admin, autocommit=True, application_name="chatsec bench") as conn:
        row: Any = conn.execute(_DESCRIBE).fetchone()
    users, threads, messages, attached, over_10k, top, heaviest, median = row
    return {
        "users": int(users),
        "threads": int(threads),
        "messages": int(messages),
        "messages_with_attachments_pct": round(100.0 * int(attached) / max(int(messages), 1), 2),
        "threads_over_10k_messages": int(over_10k),
        "busiest_threads_messages": [int(n) for n in top],
        "heaviest_user_threads": int(heaviest),
        "median_user_threads": int(median),
    }
