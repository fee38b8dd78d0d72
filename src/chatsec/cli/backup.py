"""`chatsec backup` and `chatsec restore`: logical backups verified to hold no plaintext."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatsec.cli import output
from chatsec.cli.options import keyring_option, lock_wait_option
from chatsec.db.url import DatabaseURL, resolve_url
from chatsec.defaults import ACCEPT_UNSIGNED_FLAG as ACCEPT_FLAG
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Keyring, passphrase_from_env

if TYPE_CHECKING:  # pg_dump/pg_restore's modules load when the command runs, not to list it
    from chatsec.ops.backup import RestoreReport

ADMIN_ENV = "CHATSEC_ADMIN_DATABASE_URL"


def _keyring(path: Path | None) -> Keyring | None:
    return Keyring.load(path.expanduser(), passphrase_from_env()) if path else None


def _to_stderr(line: str) -> None:
    click.echo(f"chatsec: {line}", err=True)


def busy(what: str) -> AbstractContextManager[object]:
    """A spinner on stderr while `what` runs, on a terminal only (nothing on a pipe)."""
    if not output.to_terminal(stderr=True):
        return nullcontext()
    return output.console(stderr=True).status(what)


@contextmanager
def _interruptible(what: str) -> Iterator[None]:
    """Ctrl-C or SIGTERM: the running tool is stopped, files cleaned up, one line, exit 2."""
    from chatsec.sandbox.binaries import Terminated, sigterm_interrupts

    try:
        with sigterm_interrupts():
            yield
    except KeyboardInterrupt as exc:
        cause = "SIGTERM" if isinstance(exc, Terminated) else "interrupt"
        raise ChatsecError(f"{what} stopped ({cause})") from None


@click.command()
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Backup file to create (pg_dump custom format), and NAME.manifest.json beside it; "
    "never overwritten.",
)
@click.option(
    "--database-url",
    "database_url",
    metavar="URL",
    default=None,
    help=f"A superuser or BYPASSRLS login on the chat database (default: ${ADMIN_ENV})."
    " Needs sslmode=verify-full unless $CHATSEC_ALLOW_INSECURE_TLS=1.",
)
@keyring_option(
    "Keyring file (default: $CHATSEC_KEYRING). Required: every message must decrypt with "
    "it, and its active key signs the manifest."
)
def backup(output: Path, database_url: str | None, keyring_path: Path | None) -> None:
    """Back up the chat database, verify the file, and sign its manifest.

    The dump is read back in full: every message OpenPGP ciphertext that decrypts with
    the keyring, no message text outside it, no key material (the keyring's secrets
    anywhere, key-shaped values or key settings in the schema), no large objects.
    Otherwise no file is left and the exit is 2. Beside the dump goes NAME.manifest.json:
    digest, size, revision and rows per chat table, HMAC-SHA256 under a key derived from
    the keyring's active key, which `chatsec restore` verifies before loading anything.
    Partial files an interrupted backup of the same name left behind are removed.

    Exit 0 kept and verified, 2 refused or cannot run (no file kept), 130 interrupted (no file kept).
    """
    if keyring_path is None:
        raise ChatsecError(
            "chatsec backup needs the keyring (--keyring PATH or $CHATSEC_KEYRING): every "
            "message must decrypt with it, and it signs the backup's manifest"
        )
    keyring = Keyring.load(keyring_path.expanduser(), passphrase_from_env())
    url = resolve_url(database_url, ADMIN_ENV)
    with _interruptible("backup"), busy("backing up: pg_dump, then every row verified"):
        from chatsec.ops.backup import backup as take_backup

        result = take_backup(url, output, keyring, notify=_to_stderr)
    scan, manifest = result.scan, result.manifest
    click.echo(
        f"backup {result.path} ({result.size_bytes} bytes, {scan.toc_entries} entries) "
        f"verified: {scan.decrypted} message(s) decrypt with the keyring, none of their "
        "texts elsewhere, no key material"
    )
    click.echo(
        f"manifest {result.manifest_path}: sha256 {manifest.dump_sha256}, revision "
        f"{', '.join(manifest.revision) or 'none'}, {manifest.rows} row(s) in "
        f"{len(manifest.row_counts)} table(s), HMAC-SHA256 under key {manifest.key_id}"
    )
    click.echo("keep the keyring backed up separately: without it this backup is unreadable")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--database-url",
    "database_url",
    metavar="URL",
    required=True,
    help="The empty target database, as the migrator login (status and decryption). Needs "
    "sslmode=verify-full unless $CHATSEC_ALLOW_INSECURE_TLS=1.",
)
@click.option(
    "--admin-url",
    "admin_url",
    metavar="URL",
    default=None,
    help=f"Superuser that runs pg_restore (default: ${ADMIN_ENV}, target's database).",
)
@click.option(
    "--audit-url",
    "audit_url",
    metavar="URL",
    default=None,
    help="Auditor login (default: $CHATSEC_AUDIT_DATABASE_URL, target's database).",
)
@click.option(
    "--app-url",
    "app_url",
    metavar="URL",
    default=None,
    help="App login for the audit's probes (default: $CHATSEC_APP_DATABASE_URL).",
)
@keyring_option(
    "Keyring file (default: $CHATSEC_KEYRING): verifies the manifest and decrypts every "
    "restored message."
)
@click.option(
    ACCEPT_FLAG,
    "accept_unsigned",
    is_flag=True,
    default=False,
    help="Restore even without a manifest that verifies (missing, malformed, bad HMAC, key "
    "not in the keyring), with a warning. Never a dump its authentic manifest contradicts.",
)
@click.option(
    "--create",
    is_flag=True,
    help="Create the target database first (it must not exist): owned by the --database-url "
    "login, with the database grants policies/ declare and large objects closed. Needs "
    "--admin-url to be a superuser.",
)
@lock_wait_option()
def restore(file: Path, database_url: str, admin_url: str | None, audit_url: str | None,
            app_url: str | None, keyring_path: Path | None,
            accept_unsigned: bool, create: bool, wait_s: float) -> None:  # fmt: skip
    """Restore FILE into an empty database, then check revision, audit and decryption.

    FILE.manifest.json must verify with the keyring and match FILE (size, SHA-256)
    before anything is loaded. Exit 0 when the database is at head, the audit has no
    failed check, every message decrypts with the keyring and the restored rows per
    table are the manifest's; 1 otherwise; 2 when nothing could be restored.
    """
    from chatsec.ops.backup import retarget
    from chatsec.ops.restore import create_target
    from chatsec.ops.restore import restore as run_restore

    target = DatabaseURL.parse(database_url)
    admin = retarget(resolve_url(admin_url, ADMIN_ENV), target, "--admin-url")
    auditor = retarget(resolve_url(audit_url, "CHATSEC_AUDIT_DATABASE_URL"), target, "--audit-url")
    raw_app = app_url or os.environ.get("CHATSEC_APP_DATABASE_URL")
    app = retarget(DatabaseURL.parse(raw_app), target, "--app-url") if raw_app else None
    keyring = _keyring(keyring_path)
    if create:
        create_target(admin, target)
        click.echo(f"created database {target.database} owned by {target.user}, locked down")
    with (
        busy("restoring: manifest, dump verified, pg_restore, then proven"),
        _interruptible(
            "restore (a pg_restore that was running rolled back its single transaction; "
            "if it had finished, the target holds an unproven restore: drop it and restore again)"
        ),
    ):
        report = run_restore(file, target, admin, auditor, app, keyring,
                             accept_unsigned=accept_unsigned, warn=_to_stderr,
                             wait_s=wait_s)  # fmt: skip
    click.echo(f"restored {file} into {report.target}")
    _echo_manifest(report)
    revision = ", ".join(report.current) or "none"
    click.echo(f"migrations: at {revision}" + ("" if report.at_head else
               f" -- NOT at head {', '.join(report.heads)}: chatsec deploy"))  # fmt: skip
    failed = f", FAILED: {', '.join(report.audit_failed)}" if report.audit_failed else ""
    click.echo(
        f"audit: {report.audit_passed} passed, {len(report.audit_failed)} failed, "
        f"{len(report.audit_skipped)} skipped, {report.audit_warnings} warning(s){failed}"
    )
    if report.decrypted is None:
        click.echo(f"decryption: NOT checked ({report.messages} message(s)): pass --keyring")
    else:
        click.echo(f"decryption: {report.decrypted} of {report.messages} message(s) decrypt")
    raise SystemExit(0 if report.ok else 1)


def _echo_manifest(report: RestoreReport) -> None:
    """The manifest's lines of the restore report: what was verified, what matched."""
    manifest = report.manifest
    if manifest is None:
        click.echo(f"manifest: NOT verified, accepted with {ACCEPT_FLAG}: {report.unverified}")
        click.echo("compared with the manifest: NOT (no verified manifest)")
        return
    click.echo(
        f"manifest: verified (HMAC-SHA256 under key {manifest.key_id}, sha256 "
        f"{manifest.dump_sha256[:16]}..., taken {manifest.created_at} by chatsec "
        f"{manifest.chatsec_version})"
    )
    if report.manifest_mismatches:
        click.echo(f"compared with the manifest: MISMATCH: {'; '.join(report.manifest_mismatches)}")
    else:
        click.echo(
            f"compared with the manifest: match ({manifest.rows} row(s) in "
            f"{len(manifest.row_counts)} table(s), revision {', '.join(manifest.revision)})"
        )


COMMANDS = [backup, restore]
