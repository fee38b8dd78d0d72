"""A SQLAlchemy engine for the application login, verified TLS by default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa

from chatsec.app.pool import (
    PINNED_SETTINGS,
    reset_session,
    startup_options,
    warn_about_role_defaults,
)
from chatsec.db.connect import require_verified_tls
from chatsec.db.url import resolve_url

APP_URL_ENV = "CHATSEC_APP_DATABASE_URL"


@dataclass(frozen=True)
class PoolSettings:
    """Pool defaults from the design: at most 20 connections, 30 s idle, 2 s to connect.

    `prepare_threshold` is psycopg's automatic preparation: a statement text executed
    that many times on one connection becomes a server-side prepared statement, so
    the hot queries (chatsec.queries) skip parsing and planning. 0 prepares on first
    use; None turns preparation off (e.g. behind a transaction-mode PgBouncer older
    than 1.21, which cannot track prepared statements). Prepared statements survive
    from one transaction to the next unless a transaction touched them (see
    chatsec.app.pool.reset_session).

    `session_settings` override or extend the settings every session is pinned to
    (chatsec.app.pool.PINNED_SETTINGS), e.g. {"statement_timeout": "5s"}: they are
    startup options, which outrank ALTER ROLE/DATABASE ... SET, so set timeouts here.
    """

    max_connections: int = 20
    idle_seconds: int = 30
    connect_timeout_seconds: int = 2
    checkout_timeout_seconds: float = 30.0
    prepare_threshold: int | None = 5
    session_settings: Mapping[str, str] = field(default_factory=dict)


def create_app_engine(
    url: str | None = None,
    *,
    pool: PoolSettings | None = None,
    allow_insecure: bool = False,
    **engine_kwargs: object,
) -> sa.Engine:
    """An engine for a login that is a member of app_user.

    Refuses any sslmode below verify-full unless `allow_insecure` is set (or
    CHATSEC_ALLOW_INSECURE_TLS=1). Connections use search_path `chat`, so the
    application writes `messages`, not `chat.messages`. Bind parameters are hidden
    from SQLAlchemy's logs and error messages unless `hide_parameters=False` is passed.

    Every connection is reset before the pool hands it out again (cursors, session
    settings, LISTENs, advisory locks, temporary objects, tampered prepared
    statements), and starts with the pinned session settings, so nothing one request
    does to its session reaches the next (docs/threat-model.md).
    """
    parsed = resolve_url(url, APP_URL_ENV)
    require_verified_tls(parsed, allow_insecure)
    settings = pool or PoolSettings()
    pinned = {**PINNED_SETTINGS, **settings.session_settings}
    # Keys travel as bind parameters: never let echo=True or an error message print them.
    engine_kwargs.setdefault("hide_parameters", True)
    engine = sa.create_engine(
        parsed.sqlalchemy,
        pool_size=settings.max_connections,
        max_overflow=0,
        pool_timeout=settings.checkout_timeout_seconds,
        # SQLAlchemy has no idle timeout; recycling after the idle period has the
        # same effect for a pool that is checked out at least that often.
        pool_recycle=settings.idle_seconds,
        # The reset at checkout is a round trip of its own and finds dead connections.
        pool_pre_ping=False,
        connect_args={
            "connect_timeout": settings.connect_timeout_seconds,
            "options": startup_options(pinned),
            "client_encoding": "UTF8",
            "application_name": "chatsec-app",
            "prepare_threshold": settings.prepare_threshold,
        },
        **engine_kwargs,
    )
    _reset_on_checkout(engine, pinned)
    return engine


def _driver(dbapi_connection: Any) -> psycopg.Connection[Any]:
    conn = getattr(dbapi_connection, "driver_connection", dbapi_connection)
    assert isinstance(conn, psycopg.Connection)
    return conn


def _reset_on_checkout(engine: sa.Engine, pinned: Mapping[str, str]) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: Any) -> None:
        conn = _driver(dbapi_connection)
        autocommit = conn.autocommit
        conn.autocommit = True
        try:
            warn_about_role_defaults(conn, pinned)
        finally:
            conn.autocommit = autocommit
        record.info["chatsec_fresh"] = True

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if record.info.pop("chatsec_fresh", False):
            return
        try:
            reset_session(_driver(dbapi_connection))
        except psycopg.Error as exc:
            # Never hand out a session that could not be reset: the pool closes this
            # connection and checks out (or opens) another one.
            raise sa.exc.DisconnectionError(f"session reset failed: {exc}") from exc
