"""Logical backups that keep the encryption promise, verified before they count, and restores.

A backup is `pg_dump --format=custom`, written to a private temporary file and renamed
to its name only after the dump was read back in full and found to hold proven
ciphertext, no key material and no plaintext outside it (chatsec.ops.dumpscan). Beside
it goes its manifest (chatsec.ops.manifest): digest, size, revision and rows per chat
table, read in the dump's own snapshot, authenticated with a key derived from the
keyring. The keys live in the keyring, never in the database, so a backup without its
keyring is unreadable by design (docs/operations.md).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import psycopg
from psycopg import sql

from chatsec.db.connect import connect, require_verified_tls
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.files import fsync_dir
from chatsec.keys.keyring import Keyring
from chatsec.migrate import runner
from chatsec.ops.dumpscan import MESSAGES, DumpScan, verify_dump
from chatsec.ops.manifest import (
    SUFFIX,
    FileDigest,
    Manifest,
    digest_of,
    manifest_path,
    new_manifest,
    render,
    write_new,
)
from chatsec.sandbox.binaries import first_error, run_tool, tool

# verify_dump and DumpScan moved to chatsec.ops.dumpscan; restore imports them from here.
__all__ = [
    "BackupResult",
    "DumpScan",
    "RestoreReport",
    "backup",
    "chat_row_counts",
    "dump_to",
    "remove_stale_partials",
    "restore_dump",
    "retarget",
    "verify_dump",
]

PARTIAL_INFIX = ".partial-"
_TOKEN = re.compile(r"[0-9a-f]{8}")
# The same bound pg_dump gets (--lock-wait-timeout): a backup waits this long for a lock.
LOCK_WAIT = "30s"
Notify = Callable[[str], None]


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    scan: DumpScan
    manifest: Manifest
    manifest_path: Path
    removed_partials: list[Path] = field(default_factory=list)


@dataclass
class RestoreReport:
    target: str
    current: tuple[str, ...]
    heads: tuple[str, ...]
    audit_passed: int = 0
    audit_failed: list[str] = field(default_factory=list)
    audit_skipped: list[str] = field(default_factory=list)
    audit_warnings: int = 0
    messages: int = 0
    decrypted: int | None = None  # None: not checked (no keyring)
    manifest: Manifest | None = None  # None: restored unverified (see `unverified`)
    unverified: str | None = None  # why the manifest did not verify, when accepted anyway
    manifest_mismatches: list[str] = field(default_factory=list)  # revision, rows per table

    @property
    def at_head(self) -> bool:
        return bool(self.current) and set(self.current) == set(self.heads)

    @property
    def ok(self) -> bool:
        # Fail closed: messages that were never decrypted do not count as restored.
        decrypts = self.decrypted == self.messages or (self.decrypted is None and not self.messages)
        return self.at_head and not self.audit_failed and decrypts and not self.manifest_mismatches


# -- running the client tools -------------------------------------------------------------


def _libpq(url: DatabaseURL) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the variables that carry it (never argv)."""
    require_verified_tls(url)
    # Passed on top of binaries.child_env(): no PG* redirects, no CHATSEC_* secrets.
    extra = {"PGCONNECT_TIMEOUT": "10"}
    if url.password is not None:
        extra["PGPASSWORD"] = url.password
    return url.with_credentials(url.user or "", None).libpq, extra


# -- backup -------------------------------------------------------------------------------


def _check_backup_login(url: DatabaseURL) -> None:
    with connect(url, application_name="chatsec backup") as conn:
        row = conn.execute(
            "SELECT r.rolsuper OR r.rolbypassrls, pg_catalog.to_regclass('chat.messages') "
            "IS NOT NULL FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
        ).fetchone()
    if row is None or not row[0]:
        # pg_dump sets row_security = off and stops at the first table whose policies
        # would hide rows: FORCE ROW LEVEL SECURITY applies even to the owner.
        raise ChatsecError(
            f"{url.user} cannot read every row despite FORCE ROW LEVEL SECURITY: back up with "
            "a superuser or BYPASSRLS login (default $CHATSEC_ADMIN_DATABASE_URL)"
        )
    if not row[1]:
        raise ChatsecError(f"{url.target} has no {MESSAGES}: is this chatsec's chat database?")


# Tables whose rows a backup leaves out. The identity keys sign who a transaction acts
# for (docs/identity.md): whoever holds a backup must not be able to sign identities for
# the live database. They are copies of the identity keyring's keys, which `chatsec keys
# identity generate` registers again in a restored database.
NOT_BACKED_UP = ("chat.identity_keys",)

_CHAT_TABLES = """
SELECT n.nspname, c.relname FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname = 'chat' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
   AND pg_catalog.format('%%I.%%I', n.nspname, c.relname) <> ALL(%s)
 ORDER BY 1, 2
"""


def chat_row_counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """Rows per table of schema chat ("chat.messages": n), as this connection reads them
    (the tables a backup holds: not NOT_BACKED_UP).

    The caller sets row_security = off: a login that row-level security would filter
    then gets an error instead of counting fewer rows.
    """
    counts: dict[str, int] = {}
    for schema, table in conn.execute(_CHAT_TABLES, (list(NOT_BACKED_UP),)).fetchall():
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        row = conn.execute(query).fetchone()
        counts[f"{schema}.{table}"] = int(row[0]) if row else 0
    return counts


@contextmanager
def _exported_snapshot(url: DatabaseURL) -> Iterator[tuple[psycopg.Connection[Any], str]]:
    """A read-only REPEATABLE READ transaction and the id of its exported snapshot.

    pg_dump --snapshot reads exactly what this transaction reads, so the manifest's row
    counts are the dump's. The transaction stays open (and keeps its locks on the chat
    tables it counted) until pg_dump is done.
    """
    with connect(url, application_name="chatsec backup") as conn:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        conn.execute("SET LOCAL idle_in_transaction_session_timeout = 0")
        conn.execute(f"SET LOCAL lock_timeout = '{LOCK_WAIT}'")
        conn.execute("SET LOCAL row_security = off")
        row = conn.execute("SELECT pg_catalog.pg_export_snapshot()").fetchone()
        assert row is not None
        yield conn, str(row[0])
        conn.rollback()


def dump_to(url: DatabaseURL, path: Path, snapshot: str | None = None) -> None:
    """pg_dump --format=custom of `url` into the existing file `path`, unverified."""
    conninfo, env = _libpq(url)
    cmd = [tool("pg_dump"), "--format=custom", f"--file={path}", "--no-password"]
    cmd += [f"--lock-wait-timeout={LOCK_WAIT}", f"--dbname={conninfo}"]
    cmd += [f"--exclude-table-data={table}" for table in NOT_BACKED_UP]
    if snapshot is not None:
        cmd.append(f"--snapshot={snapshot}")
    res = run_tool(cmd, env)
    if res.returncode != 0:
        raise ChatsecError(f"pg_dump of {url.target} failed: {first_error(res.stderr)}")


class _PartialFile:
    """The hidden 0600 file a dump is written to, `.NAME.partial-XXXXXXXX`, locked meanwhile.

    The lock (flock) tells a later backup that this one is still running; the kernel drops
    it when chatsec dies, however it dies, so what is left unlocked is stale.
    """

    def __init__(self, output: Path) -> None:
        self.path = output.parent / f".{output.name}{PARTIAL_INFIX}{secrets.token_hex(4)}"
        self.manifest_path = self.path.with_name(self.path.name + SUFFIX)
        self._fd = -1

    def __enter__(self) -> _PartialFile:
        # Created 0600 first: pg_dump keeps the mode of the file it truncates.
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            self._fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            raise ChatsecError(f"cannot create {self.path}: {exc.strerror}") from None
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.path.unlink(missing_ok=True)
        self.manifest_path.unlink(missing_ok=True)
        os.close(self._fd)

    def digest(self) -> FileDigest:
        """SHA-256 and size of the dump, read through the file this backup created."""
        st, mine = os.stat(self.path, follow_symlinks=False), os.fstat(self._fd)
        if (st.st_dev, st.st_ino) != (mine.st_dev, mine.st_ino):
            raise ChatsecError(f"{self.path} was replaced while the backup ran")
        os.lseek(self._fd, 0, os.SEEK_SET)
        with open(self._fd, "rb", closefd=False) as handle:
            return digest_of(handle)


def remove_stale_partials(output: Path) -> list[Path]:
    """Remove the partial files interrupted backups of `output` left; return their paths.

    Only `.NAME.partial-XXXXXXXX` (and its `.manifest.json`) of this output name, only
    regular files, and only when no running backup holds the dump partial's lock.
    """
    prefix = f".{output.name}{PARTIAL_INFIX}"
    tokens = set()
    with os.scandir(output.parent) as entries:
        for entry in entries:
            rest = entry.name.removeprefix(prefix)
            token = rest.removesuffix(SUFFIX)
            if rest != entry.name and _TOKEN.fullmatch(token):
                tokens.add(token)
    removed: list[Path] = []
    for token in sorted(tokens):
        dump_partial = output.parent / f"{prefix}{token}"
        removed += _remove_if_stale(
            dump_partial, dump_partial.with_name(dump_partial.name + SUFFIX)
        )
    return removed


def _remove_if_stale(dump_partial: Path, manifest_partial: Path) -> list[Path]:
    """Both files, removed unless a running backup holds the dump partial's lock."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(dump_partial, flags)
    except FileNotFoundError:
        fd = -1  # the dump partial is gone: nothing can hold it
    except OSError:
        return []  # a symlink or worse: not a file chatsec made, left alone
    try:
        if fd >= 0:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # a backup is writing it right now
        return [path for path in (dump_partial, manifest_partial) if _unlink_file(path)]
    finally:
        if fd >= 0:
            os.close(fd)


def _unlink_file(path: Path) -> bool:
    try:
        if not path.is_file() or path.is_symlink():
            return False
        path.unlink()
    except FileNotFoundError:
        return False
    return True


def _link_new(source: Path, target: Path) -> None:
    """Give `source` the name `target` atomically, never replacing a file already there."""
    try:
        os.link(source, target)  # unlike rename, fails rather than replace
    except FileExistsError:
        raise ChatsecError(f"{target} already exists: a backup never overwrites another") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise ChatsecError(f"cannot create {target}: {exc.strerror}") from None
        # A filesystem without hard links: check, then rename (not atomic against a racer).
        if os.path.lexists(target):
            raise ChatsecError(
                f"{target} already exists: a backup never overwrites another"
            ) from None
        os.rename(source, target)
        return
    source.unlink()


def _refuse_existing(*paths: Path) -> None:
    for path in paths:
        if os.path.lexists(path):
            raise ChatsecError(f"{path} already exists: a backup never overwrites another")


def backup(
    url: DatabaseURL, output: Path, keyring: Keyring, notify: Notify | None = None
) -> BackupResult:
    """pg_dump to `output` and its signed manifest, both there only if the dump verified.

    `notify` hears about stale partial files of `output` removed on the way.
    """
    output = Path(output)
    manifest_file = manifest_path(output)
    key = keyring.active  # fails first, before any work, when there is none
    _refuse_existing(output, manifest_file)
    if not output.parent.is_dir():
        raise ChatsecError(f"directory {output.parent} does not exist")
    _check_backup_login(url)
    removed = remove_stale_partials(output)
    for path in removed:
        (notify or _quiet)(f"removed {path}, left by an interrupted backup of {output.name}")
    with _PartialFile(output) as partial:
        revision, counts = _dump_with_counts(url, partial.path)
        scan = verify_dump(partial.path, keyring)
        if scan.problems:
            raise ChatsecError(
                f"backup of {url.target} refused, no file written: {'; '.join(scan.problems[:3])}"
                + (f" (+{len(scan.problems) - 3} more)" if len(scan.problems) > 3 else "")
            )
        digest = partial.digest()
        manifest = new_manifest(digest, revision, counts, key)
        write_new(partial.manifest_path, render(manifest, key))
        _publish(partial, output, manifest_file)
    return BackupResult(output, digest.size, scan, manifest, manifest_file, removed)


def _dump_with_counts(url: DatabaseURL, path: Path) -> tuple[tuple[str, ...], dict[str, int]]:
    """pg_dump into `path`; the revision and the rows per chat table of that very dump."""
    revision = runner.status(url).current
    with _exported_snapshot(url) as (conn, snapshot):
        counts = chat_row_counts(conn)
        dump_to(url, path, snapshot)
        # Read again while the counted tables are still locked: a migration that
        # committed after the first read shows here.
        if runner.status(url).current != revision:
            raise ChatsecError(
                f"a migration ran on {url.target} during the backup: nothing kept, back up again"
            )
    return revision, counts


def _publish(partial: _PartialFile, output: Path, manifest_file: Path) -> None:
    """Give the verified dump and its manifest their names, durably, the manifest first.

    A dump that exists is a finished backup: it never appears without its manifest.
    """
    _link_new(partial.manifest_path, manifest_file)
    try:
        _link_new(partial.path, output)
    except BaseException:
        manifest_file.unlink(missing_ok=True)  # ours, just made: no manifest without a dump
        raise
    fsync_dir(output.parent)


def _quiet(line: str) -> None:
    """The default `notify`: library callers read BackupResult.removed_partials instead."""


# -- restore ------------------------------------------------------------------------------

_NOT_EMPTY = """
SELECT 'schema ' || n.nspname FROM pg_catalog.pg_namespace n
 WHERE n.nspname NOT IN ('public', 'information_schema')
   AND n.nspname !~ '^pg_'
UNION ALL
SELECT 'relation ' || c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('information_schema') AND n.nspname !~ '^pg_'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT 'function ' || p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('information_schema') AND n.nspname !~ '^pg_'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'extension ' || e.extname FROM pg_catalog.pg_extension e
 WHERE e.extname NOT IN ('plpgsql', 'pg_stat_statements')
"""


def retarget(url: DatabaseURL, target: DatabaseURL, option: str) -> DatabaseURL:
    """`url` pointed at the restore target's database; it must name the same server."""
    if (url.host, url.port) != (target.host, target.port):
        raise ChatsecError(
            f"{option} points at {url.host}:{url.port}, the target at "
            f"{target.host}:{target.port}: both must name the same server"
        )
    return url.with_database(target.database or "")


def _check_restorable(admin: DatabaseURL, roles: list[str]) -> None:
    with connect(admin, application_name="chatsec restore") as conn:
        row = conn.execute(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
        ).fetchone()
        if row is None or not row[0]:
            raise ChatsecError(
                f"{admin.user} is not a superuser: pg_restore must recreate extensions, "
                "ownership by chat_owner and grants (--admin-url or $CHATSEC_ADMIN_DATABASE_URL)"
            )
        found = [str(r[0]) for r in conn.execute(_NOT_EMPTY).fetchall()]
        if found:
            raise ChatsecError(
                f"{admin.target} is not empty ({', '.join(found[:3])}"
                + (f" and {len(found) - 3} more" if len(found) > 3 else "")
                + "): restore only into a new, empty database"
            )
        existing = {
            str(r[0])
            for r in conn.execute(
                "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", (roles,)
            ).fetchall()
        }
    missing = sorted(set(roles) - existing)
    if missing:
        raise ChatsecError(
            f"role(s) {', '.join(missing)} missing on {admin.host}:{admin.port}: roles are "
            "cluster-wide and not in a pg_dump; create them first (pg_dumpall --roles-only "
            "on the source cluster)"
        )


def restore_dump(path: Path, admin: DatabaseURL, roles: list[str]) -> None:
    """pg_restore into the empty database `admin` names, all or nothing."""
    if not Path(path).is_file():
        raise ChatsecError(f"backup file {path} does not exist")
    _check_restorable(admin, roles)
    conninfo, env = _libpq(admin)
    # One transaction: a failure leaves the database as empty as it was.
    cmd = [tool("pg_restore"), "--exit-on-error", "--single-transaction", "--no-password"]
    cmd += [f"--dbname={conninfo}", str(path)]
    res = run_tool(cmd, env)
    if res.returncode != 0:
        raise ChatsecError(
            f"pg_restore into {admin.target} failed, nothing restored: {first_error(res.stderr)}"
        )
