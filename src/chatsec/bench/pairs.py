"""Thread List and Message History under RLS (app login) against the superuser, per user.

Four pairs, every statement taken from chatsec.queries when the benchmark runs:

- chatsec's rewrites: THREAD_LIST and history_sql() as the app login, against
  THREAD_LIST_EXPLICIT and history_sql(explicit_member=True) as the superuser (the
  caller's membership said explicitly, nothing for RLS to add): targets on the median
  over users and on the heaviest user;
- the design's literal texts, THREAD_LIST_DESIGN and MESSAGE_HISTORY_DESIGN (what an
  application would naturally write), the same text for both logins: every user within
  the target, and no plan JIT-compiled for the app that is not for the superuser.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from chatsec import queries
from chatsec.bench import checks
from chatsec.bench.engines import Engines, Explained, Login, Params, Run
from chatsec.bench.interleave import PRIME, UserAB, interleave
from chatsec.bench.sample import Sample, SampledUser
from chatsec.bench.stats import num, spread

THREAD_PAGE = 20
HISTORY_PAGE = 50
# The design's Thread List takes one :last_read for every thread: the user's read
# marker in their busiest thread, or (never read) a time before every message. Always a
# timestamp, so the statement keeps one parameter type and one prepared statement.
NEVER_READ = datetime(1970, 1, 1, tzinfo=UTC)

ParamsOf = Callable[[SampledUser, Sample], Params]


@dataclass(frozen=True)
class Side:
    login: Login
    statement: str  # where the SQL comes from, for the report
    sql: str
    params: ParamsOf


@dataclass(frozen=True)
class Pair:
    name: str
    a: Side  # the app login, under RLS
    b: Side  # the superuser
    design: bool  # the design's literal text: checked per user, and for JIT


def _thread_page(u: SampledUser, s: Sample) -> Params:
    return {"limit": THREAD_PAGE, "offset": 0}


def _history_page(u: SampledUser, s: Sample) -> Params:
    return {"thread_id": u.thread_id, "limit": HISTORY_PAGE}


def _as_caller(params: ParamsOf) -> ParamsOf:
    return lambda u, s: {**params(u, s), "user_id": u.user_id}


def _design_thread_list(u: SampledUser, s: Sample) -> Params:
    return {
        "user_id": u.user_id,
        "limit": THREAD_PAGE,
        "offset": 0,
        "last_read": u.last_read or NEVER_READ,
    }


def _design_history(u: SampledUser, s: Sample) -> Params:
    return {"thread_id": u.thread_id, "before": s.before, "limit": HISTORY_PAGE}


def pairs() -> list[Pair]:
    q = "chatsec.queries."
    return [
        Pair(
            "thread_list",
            Side("app", q + "THREAD_LIST", queries.THREAD_LIST, _thread_page),
            Side(
                "superuser",
                q + "THREAD_LIST_EXPLICIT",
                queries.THREAD_LIST_EXPLICIT,
                _as_caller(_thread_page),
            ),
            design=False,
        ),
        Pair(
            "message_history",
            Side("app", q + "history_sql()", queries.history_sql(), _history_page),
            Side(
                "superuser",
                q + "history_sql(explicit_member=True)",
                queries.history_sql(explicit_member=True),
                _as_caller(_history_page),
            ),
            design=False,
        ),
        Pair(
            "thread_list_design",
            Side("app", q + "THREAD_LIST_DESIGN", queries.THREAD_LIST_DESIGN, _design_thread_list),
            Side(
                "superuser",
                q + "THREAD_LIST_DESIGN",
                queries.THREAD_LIST_DESIGN,
                _design_thread_list,
            ),
            design=True,
        ),
        Pair(
            "message_history_design",
            Side(
                "app", q + "MESSAGE_HISTORY_DESIGN", queries.MESSAGE_HISTORY_DESIGN, _design_history
            ),
            Side(
                "superuser",
                q + "MESSAGE_HISTORY_DESIGN",
                queries.MESSAGE_HISTORY_DESIGN,
                _design_history,
            ),
            design=True,
        ),
    ]


@dataclass(frozen=True)
class UserPlans:
    a: Explained
    b: Explained


def _runner(engines: Engines, side: Side, sample: Sample) -> Callable[[SampledUser], Run]:
    return lambda u: engines.timed(side.login, u.user_id, side.sql, side.params(u, sample))


def _plans(engines: Engines, pair: Pair, u: SampledUser, sample: Sample) -> UserPlans:
    a, b = pair.a, pair.b
    return UserPlans(
        engines.explain(a.login, u.user_id, a.sql, a.params(u, sample)),
        engines.explain(b.login, u.user_id, b.sql, b.params(u, sample)),
    )


def measure_pair(
    engines: Engines, pair: Pair, sample: Sample, repeat: int, warmup: int, prime: int = PRIME
) -> dict[str, Any]:
    """Interleaved A/B over the sample, then one EXPLAIN (ANALYZE) per user and login."""
    results = interleave(
        _runner(engines, pair.a, sample),
        _runner(engines, pair.b, sample),
        sample.users,
        repeat,
        warmup,
        prime,
    )
    plans = [_plans(engines, pair, r.user, sample) for r in results]
    return report(pair, results, plans, repeat, warmup, prime)


def _user_json(r: UserAB, p: UserPlans) -> dict[str, Any]:
    return {
        **r.user.to_json(),
        "a_ms": num(r.a_ms),
        "b_ms": num(r.b_ms),
        "ratio": num(r.ratio, 3),
        "a_rows": r.a_rows,
        "b_rows": r.b_rows,
        "a_plan": p.a.to_json(),
        "b_plan": p.b.to_json(),
    }


def report(
    pair: Pair,
    results: list[UserAB],
    plans: list[UserPlans],
    repeat: int,
    warmup: int,
    prime: int,
) -> dict[str, Any]:
    heavy = next(r for r in results if r.user.heaviest)
    ratios = spread([r.ratio for r in results])
    jit_misses = [
        str(r.user.user_id) for r, p in zip(results, plans, strict=True) if p.a.jit and not p.b.jit
    ]
    mismatched = [str(r.user.user_id) for r in results if r.a_rows != r.b_rows]
    base = f"rls.{pair.name}"
    found: list[checks.Check]
    if pair.design:
        found = [
            checks.at_most(f"{base}.ratio.max", ratios.max, checks.DESIGN_EVERY_USER),
            checks.exactly(f"{base}.jit.app_only", len(jit_misses), 0),
        ]
    else:
        found = [
            checks.at_most(f"{base}.ratio.median", ratios.median, checks.RLS_MEDIAN),
            checks.at_most(f"{base}.ratio.heaviest", heavy.ratio, checks.RLS_HEAVIEST),
        ]
        # chatsec's two sides must return the same rows, or they do not answer the same
        # question. The design's texts need not: under RLS they get what the policies
        # let them see (chat.users, say, shows the caller only their own row).
        found.append(checks.exactly(f"{base}.rows_mismatched", len(mismatched), 0))
    return {
        "a": {"login": pair.a.login, "rls": True, "statement": pair.a.statement},
        "b": {"login": pair.b.login, "rls": False, "statement": pair.b.statement},
        "design_text": pair.design,
        "users": len(results),
        "repeat": repeat,
        "warmup": warmup,
        "prime": prime,
        "ratio": {**ratios.to_json(3), "heaviest": num(heavy.ratio, 3)},
        "a_ms": {**spread([r.a_ms for r in results]).to_json(), "heaviest": num(heavy.a_ms)},
        "b_ms": {**spread([r.b_ms for r in results]).to_json(), "heaviest": num(heavy.b_ms)},
        "jit": {
            "app_users": sum(p.a.jit for p in plans),
            "superuser_users": sum(p.b.jit for p in plans),
            "app_only": jit_misses,
        },
        "rows_mismatched": mismatched,
        "per_user": [_user_json(r, p) for r, p in zip(results, plans, strict=True)],
        "checks": [c.to_json() for c in found],
    }


def run_pairs(
    engines: Engines,
    sample: Sample,
    repeat: int,
    design_repeat: int,
    warmup: int,
    say: Callable[[str], None],
) -> dict[str, Any]:
    out = {}
    for pair in pairs():
        say(f"{pair.name}: {pair.a.statement} (app) vs {pair.b.statement} (superuser)")
        out[pair.name] = measure_pair(
            engines, pair, sample, design_repeat if pair.design else repeat, warmup
        )
    return out


def explain_heaviest(engines: Engines, sample: Sample) -> dict[str, str]:
    """--explain: every query as the app login for the heaviest user, and the superuser's
    side of every pair (the design texts and chatsec's explicit baselines)."""
    u = sample.heaviest
    plans = {}
    for pair in pairs():
        for side in (pair.a, pair.b):
            key = f"{pair.name} ({side.login})"
            plans[key] = engines.explain_text(
                side.login, u.user_id, side.sql, side.params(u, sample)
            )
    return plans
