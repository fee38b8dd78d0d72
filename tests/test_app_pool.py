"""The application pool closes idle connections and never replaces busy ones for their age.

The design: at most `max_connections` connections, each closed once it has been idle
for `idle_seconds`. Every test watches the server's own view (pg_stat_activity), not the
pool's bookkeeping.
"""

from __future__ import annotations

import gc
import os
import random
import sys
import threading
import time
import traceback
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from chatsec.app import PoolSettings, create_app_engine
from tests.conftest import ChatDB

IDLE = 0.5  # seconds: short enough for fast tests, long enough to tell idle from busy
DEADLINE = 5.0  # seconds a condition may take beyond what the pool promises
REAPER = "chatsec-idle-reaper"  # the thread's name, spelled out: old code has no constant


@pytest.fixture()
def admin(deployed_db: ChatDB) -> Iterator[psycopg.Connection[Any]]:
    """A superuser connection to the test database, to read pg_stat_activity."""
    with deployed_db.sandbox.admin_connect(deployed_db.name) as conn:
        yield conn


def _app_backends(admin: psycopg.Connection[Any]) -> set[int]:
    """Server pids of the application's sessions in the current database."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'chatsec-app'"
    ).fetchall()
    return {int(row[0]) for row in rows}


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _pid(conn: sa.Connection) -> int:
    pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
    assert isinstance(pid, int)
    return pid


def _reaper_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == REAPER}


def test_a_connection_idle_for_idle_seconds_is_closed(
    deployed_db: ChatDB, admin: psycopg.Connection[Any]
) -> None:
    engine = create_app_engine(deployed_db.app.libpq, pool=PoolSettings(idle_seconds=IDLE))
    try:
        with engine.connect() as conn:
            pid = _pid(conn)
            returned = time.monotonic()  # just before: the checkin follows
        # Not before its time: halfway through the idle period it is still open.
        time.sleep(IDLE / 2)
        assert pid in _app_backends(admin)
        # Closed by the pool while nobody uses it, not at the next checkout.
        assert _wait_for(lambda: pid not in _app_backends(admin), IDLE + DEADLINE)
        assert time.monotonic() - returned >= IDLE
        assert _app_backends(admin) == set()

        with engine.connect() as conn:
            new_pid = _pid(conn)
            # A new session with the pinned settings, not the closed one.
            assert new_pid != pid
            assert conn.execute(sa.text("SHOW search_path")).scalar() == "chat"
        # Reused, and reset at checkout, while it has not been idle long.
        with engine.connect() as conn:
            assert _pid(conn) == new_pid
            assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar() == 0
    finally:
        engine.dispose()


def test_steady_load_keeps_the_same_connections_for_as_long_as_it_lasts(
    deployed_db: ChatDB, admin: psycopg.Connection[Any]
) -> None:
    size = 4
    engine = create_app_engine(
        deployed_db.app.libpq, pool=PoolSettings(max_connections=size, idle_seconds=IDLE)
    )
    finish = time.monotonic() + 5 * IDLE
    finished = threading.Event()
    # Every round, all `size` workers hold a connection at once, so every pooled
    # connection is busy many times per idle period; the barrier's action decides for
    # all of them together when the load ends.
    barrier = threading.Barrier(
        size, action=lambda: finished.set() if time.monotonic() >= finish else None, timeout=10
    )
    seen: list[set[int]] = [set() for _ in range(size)]
    rounds = [0] * size
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            while True:
                with engine.begin() as conn:
                    barrier.wait()
                    seen[index].add(_pid(conn))
                rounds[index] += 1
                if finished.is_set():
                    return
                time.sleep(0.01)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    workers = [threading.Thread(target=work, args=(i,)) for i in range(size)]
    most_backends = 0
    try:
        for worker in workers:
            worker.start()
        while any(worker.is_alive() for worker in workers):
            most_backends = max(most_backends, len(_app_backends(admin)))
            time.sleep(0.05)
        assert not errors, errors
        assert min(rounds) >= 20
        used = set().union(*seen)
        # Never more sessions than the pool holds, and none replaced: the same `size`
        # backends served the whole load (a lifetime would have reopened them).
        assert most_backends <= size
        assert len(used) == size, sorted(used)
        assert _app_backends(admin) == used
    finally:
        finished.set()
        barrier.abort()
        for worker in workers:
            worker.join(timeout=10)
        engine.dispose()


def test_a_connection_in_use_longer_than_idle_seconds_is_neither_closed_nor_replaced(
    deployed_db: ChatDB, admin: psycopg.Connection[Any]
) -> None:
    engine = create_app_engine(deployed_db.app.libpq, pool=PoolSettings(idle_seconds=IDLE))
    try:
        with engine.begin() as conn:
            pid = _pid(conn)
            xid = conn.execute(sa.text("SELECT txid_current()")).scalar()
            # A transaction that sends nothing for several idle periods is still in use.
            held_until = time.monotonic() + 3 * IDLE
            while time.monotonic() < held_until:
                assert pid in _app_backends(admin)
                time.sleep(0.05)
            assert conn.execute(sa.text("SELECT txid_current()")).scalar() == xid
        # Just returned: the next checkout gets the same session, however old it is.
        with engine.connect() as conn:
            assert _pid(conn) == pid
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_light_load_shrinks_the_pool_to_the_connections_it_uses(
    deployed_db: ChatDB, admin: psycopg.Connection[Any]
) -> None:
    size = 4
    engine = create_app_engine(
        deployed_db.app.libpq, pool=PoolSettings(max_connections=size, idle_seconds=IDLE)
    )
    try:
        burst = [engine.connect() for _ in range(size)]
        burst_pids = {_pid(conn) for conn in burst}
        for conn in burst:
            conn.close()
        assert _app_backends(admin) == burst_pids

        # One request every 50 ms: far more often than every connection's idle period,
        # so only the most recently used connection should stay open.
        used: set[int] = set()

        def one_request_then_check() -> bool:
            with engine.begin() as conn:
                used.add(_pid(conn))
            time.sleep(0.05)
            return _app_backends(admin) == used

        assert _wait_for(one_request_then_check, IDLE + DEADLINE), (used, _app_backends(admin))
        assert len(used) == 1
        assert used <= burst_pids
    finally:
        engine.dispose()


def test_closing_idle_connections_never_fails_a_concurrent_checkout(
    deployed_db: ChatDB, admin: psycopg.Connection[Any]
) -> None:
    workers_count = 6
    idle = 0.05  # checkouts keep arriving just as connections fall due
    engine = create_app_engine(
        deployed_db.app.libpq,
        pool=PoolSettings(max_connections=workers_count, idle_seconds=idle),
    )
    stop = time.monotonic() + 2.0
    seen: set[int] = set()
    done = [0] * workers_count
    errors: list[BaseException] = []

    def work(index: int) -> None:
        rng = random.Random(index)
        try:
            while time.monotonic() < stop:
                with engine.begin() as conn:
                    seen.add(_pid(conn))
                    assert conn.execute(sa.text("SHOW search_path")).scalar() == "chat"
                done[index] += 1
                time.sleep(rng.uniform(0, 2 * idle))
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(workers_count)]
    try:
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=30)
        assert not errors, errors
        assert min(done) >= 5
        # Connections were closed while others were checked out: the race happened.
        assert len(seen) > workers_count
        assert _wait_for(lambda: _app_backends(admin) == set(), idle + DEADLINE)
    finally:
        engine.dispose()


def test_the_reaper_is_a_daemon_thread_that_ends_with_its_engine(
    deployed_db: ChatDB, admin: psycopg.Connection[Any]
) -> None:
    # Disposed: its idle connections are closed at once and the thread ends.
    engine = create_app_engine(deployed_db.app.libpq, pool=PoolSettings(idle_seconds=IDLE))
    before = _reaper_threads()
    with engine.connect() as conn:
        pid = _pid(conn)
    del conn
    started = _reaper_threads() - before
    assert len(started) == 1
    thread = started.pop()
    assert thread.daemon
    engine.dispose()
    assert _wait_for(lambda: pid not in _app_backends(admin), DEADLINE)
    assert _wait_for(lambda: not thread.is_alive(), IDLE + DEADLINE)

    # Dropped without dispose: the thread holds no reference that keeps the engine.
    engine = create_app_engine(deployed_db.app.libpq, pool=PoolSettings(idle_seconds=IDLE))
    before = _reaper_threads()
    with engine.connect() as conn:
        _pid(conn)
    del conn
    started = _reaper_threads() - before
    assert len(started) == 1
    thread = started.pop()
    engine_ref = weakref.ref(engine)
    del engine
    with warnings.catch_warnings():
        # psycopg warns about connections garbage-collected while open: that is the point.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    assert engine_ref() is None
    assert _wait_for(lambda: not thread.is_alive(), IDLE + DEADLINE)


def _child_reaps_only_its_own(db: ChatDB, engine: sa.Engine) -> int:
    """In a forked child: use the engine as a forked worker should; 0 if all went well."""
    engine.dispose(close=False)  # the pooled connections are the parent's
    with engine.connect() as conn:
        pid = _pid(conn)
    with db.sandbox.admin_connect(db.name) as admin:
        # The child's own idle connection is closed: its reaper works after the fork.
        # By then any connection inherited from the parent would have fallen due too.
        return 0 if _wait_for(lambda: pid not in _app_backends(admin), IDLE + DEADLINE) else 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_never_closes_the_parents_connections(deployed_db: ChatDB) -> None:
    engine = create_app_engine(deployed_db.app.libpq, pool=PoolSettings(idle_seconds=IDLE))
    try:
        with engine.connect() as conn:
            parent_pid = _pid(conn)
        # The parent's connection is idle in the pool (watched) when the child is forked.
        child = os.fork()
        if child == 0:
            code = 1
            try:
                code = _child_reaps_only_its_own(deployed_db, engine)
            except BaseException:
                traceback.print_exc(file=sys.stderr)
            finally:
                os._exit(code)
        # The parent takes its connection back at once and holds it while the child runs:
        # a child that closed its copy would cut the parent's session.
        with engine.connect() as conn:
            assert _pid(conn) == parent_pid
            _, status = os.waitpid(child, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert conn.execute(sa.text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_idle_seconds_must_be_positive() -> None:
    # Zero or less would close every connection as it comes back: no pool at all.
    for idle in (0, -1.0):
        with pytest.raises(ValueError, match="idle_seconds must be positive"):
            PoolSettings(idle_seconds=idle)
