"""Summaries of repeated timings: median with its spread, never a single lucky run."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Summary:
    """Milliseconds (or any unit) of repeated runs: median, quartiles, extremes, count."""

    median: float
    p25: float
    p75: float
    min: float
    max: float
    p99: float
    n: int

    def to_json(self) -> dict[str, float | int]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def num(value: float, digits: int = 4) -> float | None:
    """Rounded for the JSON report; None for a value that is not finite (JSON has no inf)."""
    return round(value, digits) if math.isfinite(value) else None


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not sorted_values:
        raise ValueError("no values")
    pos = (len(sorted_values) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: list[float]) -> Summary:
    ordered = sorted(values)
    return Summary(
        median=statistics.median(ordered),
        p25=quantile(ordered, 0.25),
        p75=quantile(ordered, 0.75),
        min=ordered[0],
        max=ordered[-1],
        p99=quantile(ordered, 0.99),
        n=len(ordered),
    )


def time_ms(fn: Callable[[], object], repeat: int, warmup: int = 1) -> Summary:
    """Run `fn` warmup + repeat times; the summary of the timed runs in milliseconds."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000.0)
    return summarize(samples)


@dataclass(frozen=True)
class Spread:
    """One figure over many users (each user's own median): p10, median, p90, extremes."""

    p10: float
    median: float
    p90: float
    min: float
    max: float
    n: int

    def to_json(self, digits: int = 4) -> dict[str, float | int]:
        return {
            k: (round(v, digits) if isinstance(v, float) else v) for k, v in asdict(self).items()
        }


def spread(values: list[float]) -> Spread:
    ordered = sorted(values)
    return Spread(
        p10=quantile(ordered, 0.10),
        median=statistics.median(ordered),
        p90=quantile(ordered, 0.90),
        min=ordered[0],
        max=ordered[-1],
        n=len(ordered),
    )
