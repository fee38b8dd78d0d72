"""Deploy, roll back and report migration state: thin wrappers over Alembic's command API.

Deploy and rollback hold chatsec's database lock (chatsec.db.lock), so two of them,
or one and a key rotation, never interleave; each runs every revision in one
transaction. A rollback counts, inside that transaction, what the downgrade drops;
it commits only if nothing holding data goes, or the caller accepts the loss.
"""

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
from chatsec.db.lock import database_lock
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


@dataclass(frozen=True)
class Loss:
    """Data a rollback drops: a table's rows, or a column's non-null values."""

    name: str  # schema.table or schema.table.column
    rows: int  # -1: could not be counted (treated as data)

    def __str__(self) -> str:
        count = "rows unknown" if self.rows < 0 else f"{self.rows} row(s)"
        kind = "column" if self.name.count(".") == 2 else "table"
        return f"{kind} {self.name}: {count}"


class RollbackWouldLoseData(ChatsecError):
    """The downgrade drops tables or columns that hold data, and the loss was not accepted."""

    def __init__(self, target: str, losses: list[Loss]) -> None:
        self.losses = losses
        super().__init__(
            f"rollback to {target} would drop data ({len(losses)} table(s) or column(s), "
            "listed above); nothing changed: pass --yes to drop it"
        )


# Tables of the chat schemas, their columns, and whether chat_owner may count them.
_TABLES = """
SELECT c.oid, n.nspname, c.relname, c.relforcerowsecurity,
       pg_catalog.pg_has_role('chat_owner', c.relowner, 'USAGE') AS counted,
       ARRAY(SELECT a.attname FROM pg_catalog.pg_attribute a
              WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
              ORDER BY a.attnum)::text[] AS columns
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'chat' AND c.relkind IN ('r', 'p')
   AND EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'chat_owner')
"""


# Not data: chatsec's own bookkeeping, made again by the upgrade (the deployment's id,
# the keyring generation seen, the last rotation; what it concerns, registered keys, is
# counted in chat.encryption_keys, whose rows and columns are data), and the identity
# keys, copies of the identity keyring's (`chatsec keys identity generate` registers
# them again after an upgrade).
_NOT_DATA = {("chat", "deployment"), ("chat", "identity_keys")}


def _quoted(*names: str) -> str:
    return ".".join('"' + name.replace('"', '""') + '"' for name in names)


def _count_contents(conn: sa.Connection) -> dict[tuple[str, ...], int]:
    """Rows per table and non-null values per column, counted as chat_owner.

    Row-level security is forced on the chat tables, so the count lifts it for a
    moment (NO FORCE, count, FORCE) inside this uncommitted transaction: nobody else
    ever sees the table without it, and the ACCESS EXCLUSIVE lock that takes is one
    the downgrade takes anyway.
    """
    tables = conn.exec_driver_sql(_TABLES).fetchall()
    counts: dict[tuple[str, ...], int] = {}
    if not tables:
        return counts
    conn.exec_driver_sql("SET LOCAL ROLE chat_owner")
    for _oid, schema, table, forced, counted, columns in tables:
        if not counted:
            counts[(schema, table)] = -1
            continue
        target = _quoted(schema, table)
        if forced:
            conn.exec_driver_sql(f"ALTER TABLE {target} NO FORCE ROW LEVEL SECURITY")
        row = conn.exec_driver_sql(
            "SELECT count(*)"
            + "".join(f", count({_quoted(column)})" for column in columns)
            + f" FROM {target}"
        ).one()
        if forced:
            conn.exec_driver_sql(f"ALTER TABLE {target} FORCE ROW LEVEL SECURITY")
        counts[(schema, table)] = int(row[0])
        for column, values in zip(columns, row[1:], strict=True):
            counts[(schema, table, column)] = int(values)
    conn.exec_driver_sql("RESET ROLE")
    return counts


def _losses(before: dict[tuple[str, ...], int], conn: sa.Connection) -> list[Loss]:
    after = {
        (str(schema), str(table)): set(columns)
        for _, schema, table, _, _, columns in conn.exec_driver_sql(_TABLES).fetchall()
    }
    losses = []
    for name, rows in before.items():
        table = name[:2]
        gone = (
            table not in after if len(name) == 2 else table in after and name[2] not in after[table]
        )
        if gone and rows != 0 and table not in _NOT_DATA:
            losses.append(Loss(".".join(name), rows))
    return losses


def _run(
    url: DatabaseURL,
    fn: str,
    target: str,
    allow_insecure: bool,
    accept_loss: bool = True,
) -> list[Loss]:
    cfg = alembic_config(url)
    with engine_for(url, allow_insecure) as engine, engine.begin() as conn:
        cfg.attributes["connection"] = conn
        try:
            before = _count_contents(conn) if fn == "downgrade" else {}
            getattr(command, fn)(cfg, target)
            losses = _losses(before, conn) if before else []
        except CommandError as exc:
            raise ChatsecError(f"{fn} failed: {exc}") from None
        except sa.exc.DBAPIError as exc:
            raise ChatsecError(
                f"{fn} to {target} failed, nothing applied: {_one_line(exc)}"
            ) from None
        if losses and not accept_loss:
            # Leaving the block with the error rolls the whole downgrade back.
            raise RollbackWouldLoseData(target, losses)
    return losses


def deploy(
    url: DatabaseURL, to: str = "head", allow_insecure: bool = False, wait_s: float | None = None
) -> None:
    """Upgrade the database to `to`, holding chatsec's lock on it (waiting up to `wait_s`).

    Refused for a revision older than the database's: that is a rollback.
    """
    with database_lock(url, "deploy", wait_s, allow_insecure):
        here = status(url, allow_insecure).current
        if position(to) < position_of(here):
            raise ChatsecError(
                f"{url.target} is at {', '.join(here)}, newer than {to}: deploy only goes up; "
                f"chatsec rollback --to {to} goes down (and says what it would drop)"
            )
        _run(url, "upgrade", to, allow_insecure)


def rollback(
    url: DatabaseURL,
    to: str,
    allow_insecure: bool = False,
    wait_s: float | None = None,
    accept_loss: bool = False,
) -> list[Loss]:
    """Downgrade the database to `to` (a revision id, or 'base'); what it dropped.

    Refused (RollbackWouldLoseData, nothing changed) when tables or columns that hold
    data would go, unless `accept_loss`.
    """
    with database_lock(url, "rollback", wait_s, allow_insecure):
        here = status(url, allow_insecure).current
        if position(to) >= position_of(here):
            current = ", ".join(here) or "base"
            if position(to) == position_of(here):
                raise ChatsecError(f"{url.target} is at {current} already: nothing to roll back")
            raise ChatsecError(
                f"{url.target} is at {current}, older than {to}: rollback only goes down; "
                f"chatsec deploy --to {to} goes up"
            )
        return _run(url, "downgrade", to, allow_insecure, accept_loss)


def offline_downgrade_sql(url: DatabaseURL, to: str) -> str:
    """The SQL a rollback of `url`'s database to `to` would run, rendered, not run.

    Reads the current revision (so the range is exact); refuses what rollback refuses.
    """
    here = status(url).current
    if position(to) >= position_of(here):
        raise ChatsecError(
            f"{url.target} is at {', '.join(here) or 'base'}: a rollback to {to} would not go down"
        )
    return _render_offline("downgrade", f"{','.join(here)}:{to}")


def offline_sql(to: str = "head", from_rev: str | None = None) -> str:
    """The SQL an upgrade would run, rendered without connecting (Alembic offline mode)."""
    return _render_offline("upgrade", f"{from_rev}:{to}" if from_rev else to)


def _render_offline(fn: str, target: str) -> str:
    buf = io.StringIO()
    cfg = alembic_config(stdout=buf)
    cfg.set_main_option("sqlalchemy.url", "postgresql+psycopg://")
    cfg.output_buffer = buf
    try:
        getattr(command, fn)(cfg, target, sql=True)
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


@dataclass(frozen=True)
class HistoryEntry:
    revision: str
    down_revision: str | None
    message: str  # the first line of the revision's docstring
    head: bool

    def to_json(self) -> dict[str, object]:
        return {
            "revision": self.revision,
            "down_revision": self.down_revision,
            "message": self.message,
            "head": self.head,
        }


def history() -> list[HistoryEntry]:
    """Every revision shipped, oldest first."""
    scripts = script_directory()
    heads = set(scripts.get_heads())
    out = []
    for script in reversed(list(scripts.walk_revisions())):
        down = script.down_revision
        out.append(
            HistoryEntry(
                script.revision,
                down if isinstance(down, str) else None,
                (script.doc or "").strip().splitlines()[0] if script.doc else "",
                script.revision in heads,
            )
        )
    return out


def revisions() -> list[str]:
    """Every revision id shipped, oldest first (the chain is linear)."""
    return [script.revision for script in reversed(list(script_directory().walk_revisions()))]


def position(target: str) -> int:
    """Where `target` (a revision id, 'base' or 'head') is in the chain: base is -1."""
    chain = revisions()
    if target == "base":
        return -1
    if target in ("head", "heads"):
        return len(chain) - 1
    if target not in chain:
        raise ChatsecError(
            f"unknown revision {target!r}: expected base, head or one of {', '.join(chain)}"
        )
    return chain.index(target)


def position_of(current: tuple[str, ...]) -> int:
    """The position of the database's current revision (-1: nothing deployed)."""
    return max((position(rev) for rev in current), default=-1)


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
