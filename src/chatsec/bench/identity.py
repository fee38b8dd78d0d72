"""What verifying the signed identity costs: per call of chat.current_user_id(), how many
calls each of chatsec's queries makes, and so what it adds per statement.

Per call: as the app login with a valid token set, `count(chat.current_user_id())` over
N rows against `count(x)` over the same N rows, alternating; (difference) / N. Calls per
statement: pg_stat_xact_user_functions inside the transaction that ran the statement
once, with track_functions = 'pl' set on the bench database for the sessions of a new
engine (a superuser setting, reset afterwards).
"""

from __future__ import annotations

import statistics
from typing import Any

import sqlalchemy as sa

from chatsec import queries
from chatsec.app import create_app_engine, user_transaction
from chatsec.bench.engines import Engines, Params
from chatsec.bench.interleave import PRIME
from chatsec.bench.pairs import HISTORY_PAGE, THREAD_PAGE
from chatsec.bench.sample import SampledUser
from chatsec.bench.stats import num
from chatsec.bench.target import Logins
from chatsec.db.connect import connect

VERIFIER = "chat.current_user_id()"
_ROWS = 2_000
_VERIFY = "SELECT count(chat.current_user_id()) FROM pg_catalog.generate_series(1, :n) g"
_BASE = "SELECT count(g) FROM pg_catalog.generate_series(1, :n) g"
_CALLS = sa.text(
    "SELECT COALESCE(sum(calls), 0) FROM pg_catalog.pg_stat_xact_user_functions "
    "WHERE funcid = pg_catalog.to_regprocedure(:f)"
)


def _per_call_us(engines: Engines, user: SampledUser, repeat: int) -> float:
    verify: list[float] = []
    base: list[float] = []
    for i in range(PRIME + repeat):
        for stmt, out in ((_VERIFY, verify), (_BASE, base)):
            run = engines.timed("app", user.user_id, stmt, {"n": _ROWS})
            if i >= PRIME:
                out.append(run.ms)
    return (statistics.median(verify) - statistics.median(base)) * 1000.0 / _ROWS


def _calls(engine: sa.Engine, engines: Engines, user: SampledUser, sql: str, params: Params) -> int:
    with user_transaction(engine, user.user_id, engines.keyring) as conn:
        conn.execute(sa.text(sql), params).all()
        return int(conn.execute(_CALLS, {"f": VERIFIER}).scalar_one())


def identity_cost(
    logins: Logins, database: str, engines: Engines, user: SampledUser, repeat: int
) -> dict[str, Any]:
    per_call = _per_call_us(engines, user, repeat)
    statements: dict[str, tuple[str, Params]] = {
        "thread_list": (queries.THREAD_LIST, {"limit": THREAD_PAGE, "offset": 0}),
        "message_history": (
            queries.history_sql(),
            {"thread_id": user.thread_id, "limit": HISTORY_PAGE},
        ),
    }
    alter = f'ALTER DATABASE "{database}" {{}}'
    with connect(logins.admin, autocommit=True, application_name="chatsec bench") as conn:
        conn.execute(alter.format("SET track_functions = 'pl'"))
    counting = create_app_engine(logins.app.libpq, identity=engines.identity)
    try:
        calls = {
            name: _calls(counting, engines, user, sql, params)
            for name, (sql, params) in statements.items()
        }
    finally:
        counting.dispose()
        with connect(logins.admin, autocommit=True, application_name="chatsec bench") as conn:
            conn.execute(alter.format("RESET track_functions"))
    return {
        "verify_us_per_call": num(per_call, 3),
        "calls_per_statement": calls,
        "verify_ms_per_statement": {
            name: num(n * per_call / 1000.0, 4) for name, n in calls.items()
        },
    }
