"""Encrypted insert against plaintext: the statement alone, and statement + commit.

Both sides insert the same batch of messages with one `INSERT ... SELECT FROM unnest()`
(the statement shape of chatsec.queries.post_messages) as the superuser (no RLS on
either side), each batch its own committed transaction with the keys set as the
application sets them: into chat.messages, where the trigger encrypts every row, and
into the plain copy (chatsec.bench.floor), the same table without the trigger. The
two alternate batch by batch; the statement and the commit are timed separately, so
the same runs give both ratios. The application's own post_messages (RLS + trigger)
is timed too, for reference.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from chatsec import queries
from chatsec.app import user_transaction
from chatsec.bench import checks
from chatsec.bench.engines import Engines
from chatsec.bench.floor import TABLE as PLAIN_TABLE
from chatsec.bench.interleave import PRIME
from chatsec.bench.sample import SampledUser
from chatsec.bench.stats import Summary, num, summarize

_BATCH_INSERT = """
INSERT INTO {table} (id, thread_id, user_id, content)
SELECT b.id, :thread_id, :user_id, b.content
  FROM unnest(CAST(:ids AS uuid[]), CAST(:contents AS text[])) AS b(id, content)
"""


def contents(n: int) -> list[str]:
    return [
        f"benchmark message {i}: " + "lorem ipsum dolor sit amet " * (1 + i % 4) for i in range(n)
    ]


def _batch(
    engines: Engines, user: SampledUser, table: str, texts: list[str]
) -> tuple[float, float]:
    """(statement ms, commit ms) of one committed batch."""
    stmt = sa.text(_BATCH_INSERT.format(table=table))
    params = {
        "thread_id": user.thread_id,
        "user_id": user.user_id,
        "ids": [uuid.uuid4() for _ in texts],
        "contents": texts,
    }
    with user_transaction(engines.superuser, user.user_id, engines.keyring) as conn:
        start = time.perf_counter()
        conn.execute(stmt, params)
        executed = time.perf_counter()
    committed = time.perf_counter()
    return (executed - start) * 1000.0, (committed - executed) * 1000.0


def _side(
    statement: list[float], commit: list[float], batch: int
) -> tuple[Summary, Summary, dict[str, Any]]:
    """(statement alone, statement + commit, the side's figures)."""
    alone = summarize(statement)
    total = summarize([s + c for s, c in zip(statement, commit, strict=True)])
    return (
        alone,
        total,
        {
            "statement_ms": alone.to_json(),
            "commit_ms": summarize(commit).to_json(),
            "statement_and_commit_ms": total.to_json(),
            "statement_rows_per_s": round(batch / alone.median * 1000.0),
            "statement_and_commit_rows_per_s": round(batch / total.median * 1000.0),
        },
    )


def _app_post_messages(
    engines: Engines, user: SampledUser, texts: list[str], repeat: int
) -> Summary:
    def once() -> float:
        messages = [queries.NewMessage(user.thread_id, c) for c in texts]
        with user_transaction(engines.app, user.user_id, engines.keyring) as conn:
            start = time.perf_counter()
            queries.post_messages(conn, messages)
            return (time.perf_counter() - start) * 1000.0

    return _timed(once, repeat)


def _timed(once: Callable[[], float], repeat: int) -> Summary:
    for _ in range(PRIME):
        once()
    return summarize([once() for _ in range(repeat)])


def insert_cost(engines: Engines, user: SampledUser, batch: int, repeat: int) -> dict[str, Any]:
    texts = contents(batch)
    runs: dict[str, tuple[list[float], list[float]]] = {"enc": ([], []), "plain": ([], [])}
    for i in range(PRIME + repeat):
        for name, table in (("enc", "chat.messages"), ("plain", PLAIN_TABLE)):
            statement_ms, commit_ms = _batch(engines, user, table, texts)
            if i >= PRIME:
                runs[name][0].append(statement_ms)
                runs[name][1].append(commit_ms)
    enc_alone, enc_total, enc = _side(*runs["enc"], batch)
    plain_alone, plain_total, plain = _side(*runs["plain"], batch)
    # Throughput ratio: encrypted rows/s over plaintext rows/s = plaintext ms / encrypted ms.
    ratio_statement = checks.ratio(plain_alone.median, enc_alone.median)
    ratio_commit = checks.ratio(plain_total.median, enc_total.median)
    app = _app_post_messages(engines, user, texts, max(2, min(repeat, 5)))
    return {
        "batch": batch,
        "repeat": repeat,
        "encrypted": enc,
        "plaintext": plain,
        "ratio_statement": num(ratio_statement, 3),
        "ratio_statement_and_commit": num(ratio_commit, 3),
        "app_post_messages_ms": app.to_json(),
        "app_post_messages_rows_per_s": round(batch / app.median * 1000.0),
        "checks": [
            checks.at_least("insert.ratio_statement", ratio_statement, checks.INSERT).to_json(),
            checks.at_least(
                "insert.ratio_statement_and_commit", ratio_commit, checks.INSERT
            ).to_json(),
        ],
    }
