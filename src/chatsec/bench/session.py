"""What resetting a pooled session costs, and what keeping prepared statements saves.

The reset runs once per checkout in place of the pre-ping round trip it replaces
(`SELECT 1`); DISCARD ALL is the one-statement alternative, which would also drop
psycopg's prepared statements every time. Whole requests (checkout, identity and keys,
a Message History page, commit) are then timed with prepared statements kept across
requests (chatsec's engine) and with none (what DISCARD ALL at every checkout amounts
to), interleaved request by request.
"""

from __future__ import annotations

import time
from typing import Any

import sqlalchemy as sa

from chatsec import queries
from chatsec.app import PoolSettings, create_app_engine, user_transaction
from chatsec.app.pool import reset_session
from chatsec.bench.engines import Engines
from chatsec.bench.interleave import PRIME
from chatsec.bench.pairs import HISTORY_PAGE
from chatsec.bench.sample import SampledUser
from chatsec.bench.stats import summarize, time_ms
from chatsec.bench.target import Logins


def session_reset(
    logins: Logins, engines: Engines, user: SampledUser, repeat: int
) -> dict[str, Any]:
    raw = engines.app.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        ping = time_ms(lambda: conn.execute("SELECT 1", prepare=False).fetchall(), repeat, PRIME)
        conn.commit()
        reset = time_ms(lambda: reset_session(conn), repeat, PRIME)

        def discard_all() -> None:
            conn.autocommit = True
            conn.execute("DISCARD ALL", prepare=False)
            conn.autocommit = False

        discard = time_ms(discard_all, repeat, PRIME)
    finally:
        raw.invalidate()  # its prepared statements were discarded: do not pool it again
    unprepared = create_app_engine(
        logins.app.libpq, pool=PoolSettings(prepare_threshold=None), identity=engines.identity
    )
    stmt = sa.text(queries.history_sql())
    params = {"thread_id": user.thread_id, "limit": HISTORY_PAGE}

    def request(engine: sa.Engine) -> float:
        start = time.perf_counter()
        with user_transaction(engine, user.user_id, engines.keyring) as c:
            c.execute(stmt, params).all()
        return (time.perf_counter() - start) * 1000.0

    kept: list[float] = []
    none: list[float] = []
    try:
        for _ in range(PRIME):
            request(engines.app)
            request(unprepared)
        for _ in range(repeat):
            kept.append(request(engines.app))
            none.append(request(unprepared))
    finally:
        unprepared.dispose()
    k, n = summarize(kept), summarize(none)
    return {
        "reset_ms": reset.to_json(),
        "pre_ping_ms": ping.to_json(),
        "discard_all_ms": discard.to_json(),
        "request_prepared_ms": k.to_json(),
        "request_unprepared_ms": n.to_json(),
        "prepared_saves_ms": round(n.median - k.median, 3),
    }
