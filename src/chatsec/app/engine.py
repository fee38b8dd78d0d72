"""A SQLAlchemy engine for the application login, verified TLS by default."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

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
    than 1.21, which cannot track prepared statements).
    """

    max_connections: int = 20
    idle_seconds: int = 30
    connect_timeout_seconds: int = 2
    checkout_timeout_seconds: float = 30.0
    prepare_threshold: int | None = 5


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
    """
    parsed = resolve_url(url, APP_URL_ENV)
    require_verified_tls(parsed, allow_insecure)
    settings = pool or PoolSettings()
    # Keys travel as bind parameters: never let echo=True or an error message print them.
    engine_kwargs.setdefault("hide_parameters", True)
    return sa.create_engine(
        parsed.sqlalchemy,
        pool_size=settings.max_connections,
        max_overflow=0,
        pool_timeout=settings.checkout_timeout_seconds,
        # SQLAlchemy has no idle timeout; recycling after the idle period has the
        # same effect for a pool that is checked out at least that often.
        pool_recycle=settings.idle_seconds,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": settings.connect_timeout_seconds,
            "options": "-c search_path=chat",
            "application_name": "chatsec-app",
            "prepare_threshold": settings.prepare_threshold,
        },
        **engine_kwargs,
    )
