"""Restore a verified backup into an empty database, then prove it: revision, audit, decryption.

Before anything is loaded, the backup's manifest must verify (chatsec.ops.manifest) and
match the dump's bytes, and the dump must pass the scan. The dump is first copied into
an unnamed private file, hashed on the way: the scan and pg_restore read that copy, so
what was verified is what is loaded even if the file changes meanwhile, and nothing is
left behind when chatsec is killed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from chatsec.audit.api import audit
from chatsec.db.connect import connect
from chatsec.db.lock import database_lock
from chatsec.db.url import DatabaseURL
from chatsec.defaults import ACCEPT_UNSIGNED_FLAG
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Keyring
from chatsec.migrate import runner
from chatsec.ops.backup import RestoreReport, chat_row_counts, restore_dump, verify_dump
from chatsec.ops.harden import close_large_objects
from chatsec.ops.manifest import FileDigest, Manifest, ManifestError, check_dump, digest_of
from chatsec.ops.manifest import read_verified as read_manifest
from chatsec.policy.load import load_policies

_DECRYPT_ALL = (
    "SELECT count(*), count(chat.decrypt_message(content, key_id, id, thread_id)) "
    "FROM chat.messages"
)
ACCEPT_FLAG = ACCEPT_UNSIGNED_FLAG
Warn = Callable[[str], None]


def create_target(admin: DatabaseURL, target: DatabaseURL) -> None:
    """Create `target`'s database, empty and locked down, owned by `target`'s login.

    As `admin` (a superuser, or CREATEDB and a member of the owner) on its `postgres`
    database: CREATE DATABASE, then the database grants policies/ declare and nothing for
    PUBLIC, then (a superuser only can) large objects closed to PUBLIC. What a restore
    needs and a pg_dump does not carry. Refused when the database exists; dropped again
    when a step after its creation fails.
    """
    name = target.database
    if not name or not target.user:
        raise ChatsecError("--database-url must name the target database and its login")
    declared = load_policies().database or {}
    with connect(admin.with_database("postgres"), autocommit=True,
                 application_name="chatsec restore") as conn:  # fmt: skip
        exists = conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,))
        if exists.fetchone():
            raise ChatsecError(
                f"database {name} exists already: restore into it without --create "
                "(it must be empty), or choose another name"
            )
        ident = sql.Identifier(name)
        owner = sql.Identifier(target.user)
        conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(ident, owner))
        try:
            conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(ident))
            for role, privileges in sorted(declared.items()):
                conn.execute(
                    sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                        sql.SQL(", ").join(sql.SQL(p) for p in sorted(privileges)),
                        ident,
                        sql.Identifier(role),
                    )
                )
            with connect(admin.with_database(name), autocommit=True,
                         application_name="chatsec restore") as new:  # fmt: skip
                close_large_objects(new)
        except BaseException:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            raise


def restore(
    path: Path,
    target: DatabaseURL,
    admin: DatabaseURL,
    auditor: DatabaseURL,
    app: DatabaseURL | None = None,
    keyring: Keyring | None = None,
    *,
    accept_unsigned: bool = False,
    warn: Warn | None = None,
    wait_s: float | None = None,
) -> RestoreReport:
    """Restore `path` into `target` (the migrator's URL) and check what was restored.

    The manifest is verified and the dump scanned (no plaintext, no key material) before
    anything is loaded, so a tampered file never is. `accept_unsigned` accepts a missing
    or unverifiable manifest, never a dump that its authentic manifest contradicts; `warn`
    hears it first. `admin` runs pg_restore; `auditor` runs the audit (probes as `app`
    when given); with a keyring every restored message must decrypt; the restored rows
    per table must be the manifest's. Verifying and loading hold chatsec's lock on the
    target database (waiting up to `wait_s`), so two restores never load into it at once.
    """
    path = Path(path)
    manifest, unverified = _manifest_or_reason(path, keyring, accept_unsigned)
    if unverified is not None:
        (warn or _quiet)(
            f"warning: restoring {path} WITHOUT a verified manifest ({unverified}): nothing "
            "proves it is the backup chatsec wrote, unchanged (accepted with --accept-unsigned)"
        )
    with database_lock(target, "restore", wait_s), _private_copy(path) as (copy, digest):
        if manifest is not None:
            try:
                check_dump(manifest, digest)
            except ManifestError as exc:
                raise ChatsecError(f"{path} is not restored: {exc}") from None
        try:
            scan = verify_dump(copy, keyring)
            if scan.problems:
                raise ChatsecError(f"{path} is not restored: {'; '.join(scan.problems[:3])}")
            restore_dump(copy, admin, sorted(load_policies().roles))
        except ChatsecError as exc:
            # The tools saw the copy's /proc name; the operator knows the file's.
            raise ChatsecError(str(exc).replace(str(copy), str(path)), exc.exit_code) from None
    state = runner.status(target)
    report = RestoreReport(target.target, state.current, state.heads)
    report.manifest, report.unverified = manifest, unverified
    if manifest is not None:
        report.manifest_mismatches = _mismatches(manifest, state.current, _restored_rows(admin))
    results = audit(
        auditor,
        app_url=app,
        probe=app is not None,
        keyring=keyring.path if keyring else None,
    ).results
    report.audit_passed = sum(1 for r in results if r.status == "passed")
    report.audit_failed = [r.check_id for r in results if r.status == "failed"]
    report.audit_skipped = [r.check_id for r in results if r.status == "skipped"]
    report.audit_warnings = sum(1 for r in results for f in r.findings if f.level == "warning")
    if keyring is not None:
        report.messages, report.decrypted = decrypt_all(target, keyring)
    else:
        report.messages = count_messages(target)
    return report


def _quiet(line: str) -> None:
    """The default `warn`: library callers read RestoreReport.unverified instead."""


def _manifest_or_reason(
    path: Path, keyring: Keyring | None, accept_unsigned: bool
) -> tuple[Manifest | None, str | None]:
    """The verified manifest, or (with `accept_unsigned`) why there is none; else refuse."""
    try:
        return read_manifest(path, keyring), None
    except ManifestError as exc:
        if accept_unsigned:
            return None, str(exc)
        raise ChatsecError(
            f"{path} is not restored: {exc} ({ACCEPT_FLAG} restores it unverified)"
        ) from None


@contextmanager
def _private_copy(path: Path) -> Iterator[tuple[Path, FileDigest]]:
    """An unnamed 0600 copy of `path` in $TMPDIR, its digest, and a name tools can open.

    tempfile.TemporaryFile has no name from the start (O_TMPFILE, or unlinked at once):
    the kernel frees it when chatsec exits, however. The client tools open it through
    /proc/PID/fd/N, which names this open file, not a path anyone could swap.
    """
    try:
        source = path.open("rb")
    except OSError as exc:
        raise ChatsecError(f"cannot read {path}: {exc.strerror}") from None
    with source, tempfile.TemporaryFile(prefix="chatsec-restore-") as copy:
        digest = digest_of(source, copy)
        copy.flush()
        yield Path(f"/proc/{os.getpid()}/fd/{copy.fileno()}"), digest


def _restored_rows(admin: DatabaseURL) -> dict[str, int]:
    """Rows per chat table of the restored database, as its superuser reads them."""
    with connect(admin, application_name="chatsec restore") as conn:
        conn.execute("SET row_security = off")  # an error, never fewer rows, if filtered
        counts = chat_row_counts(conn)
        conn.rollback()
    return counts


def _mismatches(
    manifest: Manifest, revision: tuple[str, ...], restored: Mapping[str, int]
) -> list[str]:
    """Where the restored database differs from what the manifest recorded."""
    found: list[str] = []
    if set(revision) != set(manifest.revision):
        found.append(
            f"revision {', '.join(revision) or 'none'} restored, "
            f"{', '.join(manifest.revision) or 'none'} in the manifest"
        )
    expected = manifest.row_counts
    for table in sorted(set(expected) | set(restored)):
        want, got = expected.get(table), restored.get(table)
        if want is None:
            found.append(f"{table}: {got} row(s) restored, the manifest has no such table")
        elif got is None:
            found.append(f"{table}: missing after the restore ({want} row(s) in the manifest)")
        elif want != got:
            found.append(f"{table}: {got} row(s) restored, {want} in the manifest")
    return found


def decrypt_all(url: DatabaseURL, keyring: Keyring) -> tuple[int, int]:
    """(messages, messages that decrypt) with the keyring, as the key rotator reads them."""
    try:
        with registry.acting_as(url, registry.ROTATOR, keyring, "chatsec restore") as conn:
            row = conn.execute(_DECRYPT_ALL).fetchone()
    except psycopg.Error as exc:
        reason = (exc.diag.message_primary if exc.diag else None) or str(exc)
        raise ChatsecError(
            f"restored messages do not decrypt with keyring {keyring.path}: {reason}"
        ) from None
    assert row is not None
    return int(row[0]), int(row[1])


def count_messages(url: DatabaseURL) -> int:
    with registry.acting_as(url, registry.ROTATOR, None, "chatsec restore") as conn:
        row = conn.execute("SELECT count(*) FROM chat.messages").fetchone()
    return int(row[0]) if row else 0
