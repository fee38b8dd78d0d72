"""A/B interleaving per user: ABAB..., each side's median, the ratio A / B.

Whatever the machine does meanwhile (another process, autovacuum, a checkpoint) lands
on both sides alike, since A and B alternate run by run. Before the first user, each
side runs `prime` times (cycling over the users) so that the timed runs use what the
application settles on: psycopg prepares a statement at its fifth execution on a
connection, and PostgreSQL chooses between custom and generic plans after five more.
Each user then gets `warmup` untimed rounds (their rows into the cache) and `repeat`
timed ones.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from chatsec.bench.engines import Run
from chatsec.bench.sample import SampledUser

# Past psycopg's prepare threshold (5) and PostgreSQL's five custom plans.
PRIME = 7

Runner = Callable[[SampledUser], Run]


@dataclass(frozen=True)
class UserAB:
    """One user's timed runs of both sides (milliseconds) and the rows each returned."""

    user: SampledUser
    a: tuple[float, ...]
    b: tuple[float, ...]
    a_rows: int
    b_rows: int

    @property
    def a_ms(self) -> float:
        return statistics.median(self.a)

    @property
    def b_ms(self) -> float:
        return statistics.median(self.b)

    @property
    def ratio(self) -> float:
        return self.a_ms / self.b_ms if self.b_ms > 0 else float("inf")


def interleave(
    a: Runner,
    b: Runner,
    users: Sequence[SampledUser],
    repeat: int,
    warmup: int,
    prime: int = PRIME,
) -> list[UserAB]:
    """For each user in order: `warmup` untimed AB rounds, then `repeat` timed ones."""
    for i in range(prime):
        user = users[i % len(users)]
        a(user)
        b(user)
    out = []
    for user in users:
        for _ in range(warmup):
            a(user)
            b(user)
        a_runs: list[Run] = []
        b_runs: list[Run] = []
        for _ in range(repeat):
            a_runs.append(a(user))
            b_runs.append(b(user))
        out.append(
            UserAB(
                user,
                tuple(r.ms for r in a_runs),
                tuple(r.ms for r in b_runs),
                a_runs[-1].rows,
                b_runs[-1].rows,
            )
        )
    return out
