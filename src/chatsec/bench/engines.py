"""The two logins every comparison runs on, both through the application's own engine.

"app" is the application login under row-level security; "superuser" is the admin
login, which FORCE ROW LEVEL SECURITY does not bind. Both are chatsec.app engines (same
driver, pinned session settings, psycopg's automatic prepared statements) and both run
every statement inside chatsec.app.user_transaction, which sets the user's signed
identity and the keys for that transaction: the only difference left between the two
is RLS (and the identity verification RLS calls for).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Literal
from uuid import UUID

import sqlalchemy as sa

from chatsec.app import create_app_engine, user_transaction
from chatsec.bench.target import Logins
from chatsec.identity import Signer
from chatsec.keys.keyring import Keyring

Login = Literal["app", "superuser"]
Params = dict[str, object]


@dataclass(frozen=True)
class Run:
    """One timed execution: client-side wall time of execute + fetch, rows fetched."""

    ms: float
    rows: int


@dataclass(frozen=True)
class Explained:
    """What EXPLAIN (ANALYZE, FORMAT JSON) says about one execution."""

    jit: bool  # the plan was JIT-compiled ("JIT" key present)
    jit_ms: float  # JIT's own time (generation + inlining + optimization + emission)
    execution_ms: float  # server-side execution time

    def to_json(self) -> dict[str, Any]:
        return {
            "jit": self.jit,
            "jit_ms": round(self.jit_ms, 3),
            "execution_ms": round(self.execution_ms, 3),
        }


class Engines:
    def __init__(self, logins: Logins, keyring: Keyring, identity: Signer) -> None:
        self.app = create_app_engine(logins.app.libpq, identity=identity)
        self.superuser = create_app_engine(logins.admin.libpq, identity=identity)
        self.keyring = keyring
        self.identity = identity
        self._texts: dict[str, sa.TextClause] = {}

    def engine(self, login: Login) -> sa.Engine:
        return self.app if login == "app" else self.superuser

    def dispose(self) -> None:
        self.app.dispose()
        self.superuser.dispose()

    def _text(self, sql: str) -> sa.TextClause:
        if sql not in self._texts:
            self._texts[sql] = sa.text(sql)
        return self._texts[sql]

    def timed(self, login: Login, user: UUID, sql: str, params: Params) -> Run:
        """One transaction acting for `user`; only the statement and its fetch are timed."""
        stmt = self._text(sql)
        with user_transaction(self.engine(login), user, self.keyring) as conn:
            start = time.perf_counter()
            rows = conn.execute(stmt, params).all()
            elapsed = (time.perf_counter() - start) * 1000.0
        return Run(elapsed, len(rows))

    def explain(self, login: Login, user: UUID, sql: str, params: Params) -> Explained:
        """EXPLAIN (ANALYZE, FORMAT JSON) as `login` acting for `user` (the statement runs)."""
        doc = self._explain(login, user, "ANALYZE, FORMAT JSON", sql, params)
        if isinstance(doc, str):
            doc = json.loads(doc)
        top = doc[0]
        jit = top.get("JIT")
        jit_ms = float(jit.get("Timing", {}).get("Total", 0.0)) if isinstance(jit, dict) else 0.0
        return Explained(jit is not None, jit_ms, float(top.get("Execution Time", 0.0)))

    def explain_text(self, login: Login, user: UUID, sql: str, params: Params) -> str:
        """EXPLAIN (ANALYZE, BUFFERS) as text, for --explain."""
        with user_transaction(self.engine(login), user, self.keyring) as conn:
            lines = conn.execute(sa.text("EXPLAIN (ANALYZE, BUFFERS) " + sql), params).scalars()
            return "\n".join(str(line) for line in lines)

    def _explain(self, login: Login, user: UUID, options: str, sql: str, params: Params) -> Any:
        with user_transaction(self.engine(login), user, self.keyring) as conn:
            return conn.execute(sa.text(f"EXPLAIN ({options}) {sql}"), params).scalar()
