"""chatsec.app: verified TLS by default, identity scoped to one transaction on pooled connections."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from chatsec.app import PoolSettings, create_app_engine, user_transaction
from chatsec.app.chat import register_user
from chatsec.errors import ChatsecError
from tests.conftest import ChatDB


def test_engine_refuses_unverified_tls(deployed_db: ChatDB) -> None:
    for mode in ("disable", "prefer", "require", "verify-ca"):
        with pytest.raises(ChatsecError, match=f"refusing sslmode={mode}"):
            create_app_engine(deployed_db.app.with_query(sslmode=mode).libpq)


def test_engine_allows_insecure_only_when_told(deployed_db: ChatDB) -> None:
    engine = create_app_engine(
        deployed_db.app.with_query(sslmode="require").libpq, allow_insecure=True
    )
    with engine.connect() as conn:
        assert conn.execute(
            sa.text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ).scalar()
    engine.dispose()


def test_engine_pool_defaults_follow_the_design(deployed_db: ChatDB) -> None:
    engine = create_app_engine(deployed_db.app.libpq)
    assert engine.pool.size() == 20  # type: ignore[attr-defined]
    assert engine.pool._recycle == -1  # type: ignore[attr-defined]  # no lifetime: test_app_pool.py
    engine.dispose()
    custom = create_app_engine(deployed_db.app.libpq, pool=PoolSettings(max_connections=3))
    assert custom.pool.size() == 3  # type: ignore[attr-defined]
    custom.dispose()


def test_identity_never_outlives_its_transaction(deployed_db: ChatDB) -> None:
    # One pooled connection: the second transaction reuses the first one's session.
    engine = create_app_engine(deployed_db.app.libpq, pool=PoolSettings(max_connections=1))
    uid = uuid.uuid4()
    try:
        with user_transaction(engine, uid) as conn:
            register_user(conn, uid, "pool@example.com", "pool")
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar() == 1
        with engine.begin() as conn:
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar() == pid
            assert conn.execute(sa.text("SELECT chat.current_user_id()")).scalar() is None
            assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar() == 0
    finally:
        engine.dispose()


def test_failed_transaction_rolls_back_and_drops_identity(deployed_db: ChatDB) -> None:
    engine = create_app_engine(deployed_db.app.libpq, pool=PoolSettings(max_connections=1))
    uid = uuid.uuid4()
    try:
        with pytest.raises(RuntimeError), user_transaction(engine, uid) as conn:
            register_user(conn, uid, "gone@example.com", "gone")
            raise RuntimeError("application error")
        with user_transaction(engine, uid) as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM users")).scalar() == 0
    finally:
        engine.dispose()


def test_bad_user_id_is_a_clear_error(deployed_db: ChatDB) -> None:
    engine = create_app_engine(deployed_db.app.libpq)
    with pytest.raises(ChatsecError, match="UUID expected"), user_transaction(engine, "alice"):
        pass
    engine.dispose()
