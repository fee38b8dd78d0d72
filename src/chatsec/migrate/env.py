"""Alembic environment: one transaction per revision, the URL from chatsec's configuration."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, pool

from chatsec.db.url import DatabaseURL

config = context.config
VERSION_TABLE_SCHEMA = "public"


def _url() -> str:
    raw = config.get_main_option("sqlalchemy.url") or os.environ.get("CHATSEC_DATABASE_URL")
    if not raw:
        raise SystemExit("set CHATSEC_DATABASE_URL (or sqlalchemy.url) to run migrations")
    return DatabaseURL.parse(raw).sqlalchemy


def run_offline() -> None:
    context.configure(
        dialect_name="postgresql",
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table_schema=VERSION_TABLE_SCHEMA,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        version_table_schema=VERSION_TABLE_SCHEMA,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
