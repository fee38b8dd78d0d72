"""The targets of issue 11 and the verdict of one figure against one of them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from chatsec.bench.stats import num

# chatsec's Thread List and Message History under RLS / the explicit superuser baseline.
RLS_MEDIAN = 1.15  # median over the sampled users
RLS_HEAVIEST = 1.3  # the heaviest user (most threads)
# The design's literal texts under RLS / the same text as the superuser: every user.
DESIGN_EVERY_USER = 1.3
# chat.decrypt_message / bare pgp_sym_decrypt(dearmor()), per row.
DECRYPT = 1.2
# Rotation throughput / the no-crypto floor's (a keyset rewrite of every row).
ROTATION_FLOOR = 0.5
# What rotation costs per row above the floor / a bare decrypt + encrypt of the rows.
ROTATION_CRYPTO = 1.2
# Encrypted insert throughput / plaintext, statement alone and statement + commit.
INSERT = 0.7


@dataclass(frozen=True)
class Check:
    """`figure` (a dotted path in the report) `op` `target`: met or not."""

    figure: str
    value: float
    op: Literal["<=", ">=", "=="]
    target: float
    met: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "value": num(self.value, 3),
            "op": self.op,
            "target": self.target,
            "met": self.met,
        }


def at_most(figure: str, value: float, target: float) -> Check:
    return Check(figure, value, "<=", target, value <= target)


def at_least(figure: str, value: float, target: float) -> Check:
    return Check(figure, value, ">=", target, value >= target)


def exactly(figure: str, value: float, target: float) -> Check:
    return Check(figure, value, "==", target, value == target)


def ratio(numerator: float, denominator: float) -> float:
    """numerator / denominator; infinity for a zero denominator (never a silent pass)."""
    return numerator / denominator if denominator > 0 else float("inf")
