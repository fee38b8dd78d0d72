"""Whose queries are timed: a seeded sample of users, the heaviest always among them."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL


@dataclass(frozen=True)
class SampledUser:
    """A user, and the thread their Message History is timed on: their busiest."""

    user_id: UUID
    threads: int  # threads the user is in
    thread_id: UUID  # the one of them with the most messages
    thread_messages: int
    last_read: datetime | None  # their read marker in that thread
    heaviest: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "user": str(self.user_id),
            "threads": self.threads,
            "thread": str(self.thread_id),
            "thread_messages": self.thread_messages,
            "heaviest": self.heaviest,
        }


@dataclass(frozen=True)
class Sample:
    """The users in measurement order, and the design's `:before` (newer than every row)."""

    users: tuple[SampledUser, ...]
    before: datetime
    seed: int
    population: int  # users in at least one thread with messages

    @property
    def heaviest(self) -> SampledUser:
        return next(u for u in self.users if u.heaviest)

    def to_json(self) -> dict[str, Any]:
        return {
            "n": len(self.users),
            "seed": self.seed,
            "population": self.population,
            "before": self.before.isoformat(),
            "heaviest": self.heaviest.to_json(),
            "users": [u.to_json() for u in self.users],
        }


# Every user with their thread count and their busiest thread (most messages, ties by id).
_CANDIDATES = """
WITH counts AS (
  SELECT thread_id, count(*) AS n FROM chat.messages GROUP BY thread_id
), threads AS (
  SELECT user_id, count(*) AS threads FROM chat.thread_participants GROUP BY user_id
), busiest AS (
  SELECT DISTINCT ON (tp.user_id) tp.user_id, tp.thread_id, c.n, tp.last_read_at
    FROM chat.thread_participants tp JOIN counts c ON c.thread_id = tp.thread_id
   ORDER BY tp.user_id, c.n DESC, tp.thread_id
)
SELECT b.user_id, t.threads, b.thread_id, b.n, b.last_read_at
  FROM busiest b JOIN threads t ON t.user_id = b.user_id
 ORDER BY b.user_id
"""


def sample_users(admin: DatabaseURL, n: int, seed: int) -> Sample:
    """`n` users (all of them if fewer qualify): the heaviest (most threads, ties by id)
    and n - 1 drawn with `seed`, in an order also drawn with `seed`."""
    with connect(admin, autocommit=True, application_name="chatsec bench") as conn:
        rows: list[Any] = conn.execute(_CANDIDATES).fetchall()
        now: Any = conn.execute("SELECT now()").fetchone()
    if not rows or now is None:
        raise RuntimeError("the generated chat has no messages")
    candidates = [
        SampledUser(UUID(str(r[0])), int(r[1]), UUID(str(r[2])), int(r[3]), r[4]) for r in rows
    ]
    heaviest = min(candidates, key=lambda u: (-u.threads, str(u.user_id)))
    rng = random.Random(seed)  # noqa: S311 - a reproducible sample, not a secret
    others = [u for u in candidates if u.user_id != heaviest.user_id]
    chosen = rng.sample(others, min(n - 1, len(others)))
    users = [*chosen, replace(heaviest, heaviest=True)]
    rng.shuffle(users)
    return Sample(tuple(users), now[0], seed, len(candidates))
