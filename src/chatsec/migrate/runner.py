"""Deploy, roll back and report migration state: thin wrappers over Alembic's command API."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TextIO

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.paths import migrate_dir, versions_dir

VERSION_TABLE_SCHEMA = "public"


def alembic_config(url: DatabaseURL | None = None, stdout: TextIO | None = None) -> Config:
    """The same configuration as alembic.ini, built from the installed package's data."""
    cfg = Config(stdout=stdout) if stdout is not None else Config()
    cfg.set_main_option("script_location", str(migrate_dir()))
    cfg.set_main_option("version_locations", str(versions_dir()))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        # ConfigParser interpolation: a literal % in a password must be doubled.
        cfg.set_main_option("sqlalchemy.url", url.sqlalchemy.replace("%", "%%"))
    return cfg


@contextmanager
def engine_for(url: DatabaseURL, allow_insecure: bool = False) -> Iterator[sa.Engine]:
    """An engine whose connections come from chatsec's connect(): TLS checks, one-line errors."""
    engine = sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: connect(url, allow_insecure=allow_insecure, application_name="chatsec"),
        poolclass=sa.pool.NullPool,
    )
    try:
        yield engine
    finally:
        engine.dispose()


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _run(url: DatabaseURL, fn: str, target: str, allow_insecure: bool) -> None:
    cfg = alembic_config(url)
    with engine_for(url, allow_insecure) as engine, engine.begin() as conn:
        cfg.attributes["connection"] = conn
        try:
            getattr(command, fn)(cfg, target)
        except CommandError as exc:
            raise ChatsecError(f"{fn} failed: {exc}") from None
        except sa.exc.DBAPIError as exc:
            raise ChatsecError(
                f"{fn} to {target} failed, nothing applied: {_one_line(exc)}"
            ) from None


def deploy(url: DatabaseURL, to: str = "head", allow_insecure: bool = False) -> None:
    """Upgrade the database to `to`; each revision runs in its own transaction."""
    _run(url, "upgrade", to, allow_insecure)


def rollback(url: DatabaseURL, to: str, allow_insecure: bool = False) -> None:
    """Downgrade the database to `to` (a revision id, or 'base')."""
    _run(url, "downgrade", to, allow_insecure)


def offline_sql(to: str = "head", from_rev: str | None = None) -> str:
    """The SQL an upgrade would run, rendered without connecting (Alembic offline mode)."""
    buf = io.StringIO()
    cfg = alembic_config(stdout=buf)
    cfg.set_main_option("sqlalchemy.url", "postgresql+psycopg://")
    cfg.output_buffer = buf
    target = f"{from_rev}:{to}" if from_rev else to
    try:
        command.upgrade(cfg, target, sql=True)
    except CommandError as exc:
        raise ChatsecError(f"cannot render SQL: {exc}") from None
    return buf.getvalue()


@dataclass(frozen=True)
class MigrationStatus:
    current: tuple[str, ...]
    heads: tuple[str, ...]
    pending: tuple[str, ...]

    @property
    def up_to_date(self) -> bool:
        return not self.pending and set(self.current) == set(self.heads)


def script_directory() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def status(url: DatabaseURL, allow_insecure: bool = False) -> MigrationStatus:
    """Current revision(s) in the database, the head(s) shipped, and what is pending."""
    scripts = script_directory()
    with engine_for(url, allow_insecure) as engine, engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table_schema": VERSION_TABLE_SCHEMA})
        try:
            current = tuple(ctx.get_current_heads())
        except sa.exc.DBAPIError as exc:
            raise ChatsecError(f"cannot read migration state: {_one_line(exc)}") from None
    heads = tuple(scripts.get_heads())
    pending: list[str] = []
    for rev in scripts.iterate_revisions("heads", current or "base"):
        if rev.revision not in current:
            pending.append(rev.revision)
    pending.reverse()
    return MigrationStatus(current, heads, tuple(pending))
