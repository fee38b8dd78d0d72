"""What one `chatsec bench` run measures and at what scale (a leaf module: `--help` shows
the defaults without loading the benchmark or the driver)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from chatsec.errors import ChatsecError


@dataclass(frozen=True)
class Scale:
    users: int = 2_000
    threads: int = 20_000
    messages: int = 1_000_000
    seed: int = 1
    workers: int = 2


@dataclass(frozen=True)
class BenchConfig:
    scale: Scale = field(default_factory=Scale)
    users_sampled: int = 30
    repeat: int = 20  # timed runs per user and side (chatsec's queries), and elsewhere
    design_repeat: int = 5  # timed runs per user and side of the design's texts
    warmup: int = 2  # untimed rounds per user before the timed ones
    decrypt_rows: int = 2_000
    insert_batch: int = 500
    rotate_batch: int = 500
    idle_seconds: float = 2.0  # the app's inserts timed before the rotation starts
    command_runs: int = 3  # chatsec audit / chatsec deploy
    explain: bool = False
    keep: bool = False
    quick: bool = False

    def check(self) -> None:
        s = self.scale
        for name, value, low in (
            ("--users", s.users, 2),
            ("--threads", s.threads, 1),
            ("--messages", s.messages, 10),
            ("--users-sampled", self.users_sampled, 1),
            ("--repeat", self.repeat, 1),
            ("--design-repeat", self.design_repeat, 1),
            ("--warmup", self.warmup, 0),
            ("--batch", self.insert_batch, 1),
            ("--rotate-batch", self.rotate_batch, 1),
        ):
            if value < low:
                raise ChatsecError(f"{name} must be at least {low}, not {value}")
        if self.users_sampled > s.users:
            raise ChatsecError(
                f"--users-sampled ({self.users_sampled}) cannot exceed --users ({s.users})"
            )


FULL = BenchConfig()
# CI smoke: every figure, in seconds, no meaning in the numbers.
QUICK = BenchConfig(
    Scale(users=60, threads=80, messages=3_000),
    users_sampled=8,
    repeat=3,
    design_repeat=2,
    warmup=1,
    decrypt_rows=200,
    insert_batch=100,
    rotate_batch=250,
    idle_seconds=0.3,
    command_runs=1,
    quick=True,
)


def preset(quick: bool, **given: Any) -> BenchConfig:
    """FULL or QUICK, with every option given (not None) in place of the preset's."""
    base = QUICK if quick else FULL
    scale = replace(
        base.scale,
        **{k: v for k, v in given.items() if k in Scale.__dataclass_fields__ and v is not None},
    )
    rest = {k: v for k, v in given.items() if k not in Scale.__dataclass_fields__ and v is not None}
    return replace(base, scale=scale, **rest)
