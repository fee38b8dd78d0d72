"""A SQLAlchemy engine for the application login, verified TLS by default."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.pool import ConnectionPoolEntry

from chatsec.app.pool import (
    PINNED_SETTINGS,
    reset_session,
    startup_options,
    warn_about_role_defaults,
)
from chatsec.db.connect import require_verified_tls
from chatsec.db.url import resolve_url
from chatsec.errors import ChatsecError
from chatsec.identity import IDENTITY_KEYRING_ENV, Signer

APP_URL_ENV = "CHATSEC_APP_DATABASE_URL"
REAPER_THREAD_NAME = "chatsec-idle-reaper"

log = logging.getLogger("chatsec.app")

# Each engine's identity signer, without keeping an engine alive.
_SIGNERS: weakref.WeakKeyDictionary[sa.Engine, Signer] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class PoolSettings:
    """Pool defaults from the design: at most 20 connections, 30 s idle, 2 s to connect.

    A connection that has sat unused in the pool for `idle_seconds` is closed (its
    server session ends then, not at the next checkout), and the pool hands out the
    most recently returned connection first, so a quiet period shrinks the pool to
    what the load uses. A connection is never closed or replaced for its age: one in
    use is never touched, and steady load keeps the same sessions (one TLS handshake
    and SCRAM exchange each) for as long as it lasts.

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
    idle_seconds: float = 30
    connect_timeout_seconds: int = 2
    checkout_timeout_seconds: float = 30.0
    prepare_threshold: int | None = 5
    session_settings: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.idle_seconds > 0:
            raise ValueError(f"idle_seconds must be positive, not {self.idle_seconds!r}")


def create_app_engine(
    url: str | None = None,
    *,
    pool: PoolSettings | None = None,
    allow_insecure: bool = False,
    identity: Signer | None = None,
    **engine_kwargs: object,
) -> sa.Engine:
    """An engine for a login that is a member of app_user.

    `identity` signs each transaction's identity (chatsec.identity.Signer; default: the
    identity keyring at $CHATSEC_IDENTITY_KEYRING, loaded once here).

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
        # No pool_recycle: that is a lifetime, which replaces busy connections too.
        # Idle ones are closed by _close_when_idle. Most recently returned first, so
        # under light load the others stay unused and are closed (first in, first out
        # would rotate through all of them and keep every one just young enough).
        pool_use_lifo=True,
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
    # First: a checkout must take its connection out of the reaper's reach before the
    # reset uses it (listeners run in the order they are added).
    _close_when_idle(engine, settings.idle_seconds)
    _reset_on_checkout(engine, pinned)
    signer = identity or Signer.from_env()
    if signer is not None:
        _SIGNERS[engine] = signer
    return engine


def engine_signer(engine: sa.Engine) -> Signer:
    """The identity signer `engine` was created with; an error if it has none."""
    signer = _SIGNERS.get(engine)
    if signer is None:
        raise ChatsecError(
            "this engine has no identity keyring: pass identity=Signer.load(path) to "
            f"create_app_engine or set {IDENTITY_KEYRING_ENV} (docs/identity.md)"
        )
    return signer


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


class _IdleReaper:
    """Closes the connections that have sat in one engine's pool for `idle_seconds`.

    SQLAlchemy has no idle timeout (`pool_recycle` is a lifetime, checked only at the
    next checkout). The pool's checkin, checkout and close events say which entries
    are idle since when; a daemon thread, running only while some are, closes each
    one when it falls due. One lock orders the thread against checkouts.
    """

    def __init__(self, idle_seconds: float) -> None:
        self.idle_seconds = idle_seconds
        # Reentrant, as SQLAlchemy's own pool queue: a connection garbage-collected
        # without being closed is checked in by a finalizer, which may run inside any
        # allocation, including one made while this thread holds the lock.
        self._lock = threading.RLock()
        self._idle_since: dict[ConnectionPoolEntry, float] = {}
        self._thread: threading.Thread | None = None
        _REAPERS.add(self)

    def checked_in(self, entry: ConnectionPoolEntry) -> None:
        """`entry` is idle from now on; start the thread if it is not running."""
        if entry.dbapi_connection is None:  # invalidated on its way back: nothing to close
            return
        with self._lock:
            self._idle_since[entry] = time.monotonic()
            if self._thread is None:
                # Nothing falls due before idle_seconds from now, the thread's first wake-up.
                self._thread = threading.Thread(
                    target=_reap_while_alive,
                    args=(weakref.ref(self), self.idle_seconds),
                    name=REAPER_THREAD_NAME,
                    daemon=True,
                )
                try:
                    self._thread.start()
                except RuntimeError:
                    # Out of threads, or interpreter shutdown: the connection must
                    # still return to the pool; the next checkin tries again.
                    self._thread = None
                    log.exception("could not start the idle-connection reaper")

    def claim(self, entry: ConnectionPoolEntry, dbapi_connection: Any) -> bool:
        """Take a checked-out `entry` out of the thread's reach; False if it was closed
        while idle (the thread got to it as the pool handed it out)."""
        with self._lock:
            self._idle_since.pop(entry, None)
            return not _driver(dbapi_connection).closed

    def forget(self, entry: ConnectionPoolEntry) -> None:
        """`entry`'s connection is being closed by the pool (dispose, invalidation)."""
        with self._lock:
            self._idle_since.pop(entry, None)

    def reap(self) -> float | None:
        """Close the connections idle for `idle_seconds`: the seconds until the next
        falls due, or None when none is idle (the thread then ends)."""
        now = time.monotonic()
        with self._lock:
            # A copy: such a finalizer may check an entry in while this loop runs.
            idle_since = self._idle_since.copy()
            due = [e for e, since in idle_since.items() if now - since >= self.idle_seconds]
            for entry in due:
                self._idle_since.pop(entry, None)
                # Under the lock: a checkout's claim sees the connection open and keeps
                # it, or sees it closed and reconnects, never one closing underneath it.
                _close_idle(entry)
            if not self._idle_since:
                self._thread = None
                return None
            return min(self._idle_since.values()) + self.idle_seconds - now

    def after_fork(self) -> None:
        """In a forked child: the pooled connections share the parent's sockets, and
        the lock may have been held by a thread that does not exist here."""
        self._lock = threading.RLock()
        self._idle_since = {}
        self._thread = None


# Every live reaper, for the fork hook; weak, so that engines still go away.
_REAPERS: weakref.WeakSet[_IdleReaper] = weakref.WeakSet()


def _forget_parent_connections() -> None:
    for reaper in list(_REAPERS):
        reaper.after_fork()


if hasattr(os, "register_at_fork"):
    # A child that closed an inherited connection would write to the socket of the
    # parent's session (TLS close-notify, Terminate) and break it: children forget them.
    os.register_at_fork(after_in_child=_forget_parent_connections)


def _reap_while_alive(reaper_ref: weakref.ref[_IdleReaper], first_wait: float) -> None:
    """The reaper thread: ends when its engine's pool is gone or nothing is idle.

    It holds its reaper only while reaping, never while sleeping, so a dropped engine
    is garbage-collected (and the thread ends at its next wake-up).
    """
    wait: float | None = first_wait
    while wait is not None:
        time.sleep(wait)
        reaper = reaper_ref()
        if reaper is None:
            return
        wait = reaper.reap()
        del reaper


def _close_idle(entry: ConnectionPoolEntry) -> None:
    """End an idle entry's session; the pool opens a new one at its next checkout."""
    connection = entry.dbapi_connection
    if connection is None:
        return
    try:
        # Soft invalidation, then closing the DBAPI connection ourselves: the pool
        # reconnects the entry at its next checkout. ConnectionPoolEntry.close() would
        # also clear entry.dbapi_connection, which a checkout in another thread may be
        # reading between taking the entry and firing the checkout event.
        entry.invalidate(soft=True)
        connection.close()
    except Exception:
        # Keep the thread alive for the others. This entry is no longer watched; if
        # its connection is still open it is reused (and reset) at the next checkout.
        log.exception("closing an idle pooled connection failed")


def _close_when_idle(engine: sa.Engine, idle_seconds: float) -> None:
    """Close `engine`'s pooled connections once idle for `idle_seconds` (_IdleReaper)."""
    reaper = _IdleReaper(idle_seconds)

    @sa.event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        reaper.checked_in(record)

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        if not reaper.claim(record, dbapi_connection):
            # The pool closes this entry's connection and opens a new one.
            raise sa.exc.DisconnectionError("connection closed after idling")

    @sa.event.listens_for(engine, "close")
    def _on_close(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        reaper.forget(record)
