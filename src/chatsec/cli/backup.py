"""`chatsec backup` and `chatsec restore`: logical backups verified to hold no plaintext."""

from __future__ import annotations

import os
from pathlib import Path

import click

from chatsec.cli.options import keyring_option
from chatsec.db.url import DatabaseURL, resolve_url
from chatsec.keys.keyring import Keyring, passphrase_from_env
from chatsec.ops.backup import backup as take_backup
from chatsec.ops.backup import retarget
from chatsec.ops.restore import restore as run_restore

ADMIN_ENV = "CHATSEC_ADMIN_DATABASE_URL"


def _keyring(path: Path | None) -> Keyring | None:
    return Keyring.load(path.expanduser(), passphrase_from_env()) if path else None


_keyring_option = keyring_option()


@click.command()
@click.option(
    "--output",
    "-o",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Backup file to create (pg_dump custom format); never overwritten.",
)
@click.option(
    "--database-url",
    "database_url",
    metavar="URL",
    default=None,
    help=f"A superuser or BYPASSRLS login on the chat database (default: ${ADMIN_ENV}).",
)
@_keyring_option
def backup(output: Path, database_url: str | None, keyring_path: Path | None) -> None:
    """Back up the chat database, then verify the file before keeping it.

    The dump is read back in full: every message OpenPGP ciphertext that (with the
    keyring) decrypts, no message text outside it, no key material (the keyring's
    secrets anywhere, key-shaped values or key settings in the schema), no large
    objects. Otherwise no file is left and the exit is 2. Checks that need the keyring
    are printed as NOT checked when it is not given.
    """
    result = take_backup(resolve_url(database_url, ADMIN_ENV), output, _keyring(keyring_path))
    scan = result.scan
    if scan.decrypted is None:
        proven = f"{scan.messages} message(s) OpenPGP-encrypted, no key-shaped value in the schema"
    else:
        proven = (
            f"{scan.decrypted} message(s) decrypt with the keyring, none of their texts "
            "elsewhere, no key material"
        )
    click.echo(
        f"backup {result.path} ({result.size_bytes} bytes, {scan.toc_entries} entries) "
        f"verified: {proven}"
    )
    for reason in scan.unchecked:
        click.echo(f"NOT checked: {reason}")
    click.echo("keep the keyring backed up separately: without it this backup is unreadable")


@click.command()
@click.argument("file", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--database-url",
    "database_url",
    metavar="URL",
    required=True,
    help="The empty target database, as the migrator login (status and decryption).",
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
@_keyring_option
def restore(file: Path, database_url: str, admin_url: str | None, audit_url: str | None,
            app_url: str | None, keyring_path: Path | None) -> None:  # fmt: skip
    """Restore FILE into an empty database, then check revision, audit and decryption.

    Exit 0 when the database is at head, the audit has no failed check and every
    message decrypts with the keyring; 1 otherwise; 2 when nothing could be restored.
    """
    target = DatabaseURL.parse(database_url)
    admin = retarget(resolve_url(admin_url, ADMIN_ENV), target, "--admin-url")
    auditor = retarget(resolve_url(audit_url, "CHATSEC_AUDIT_DATABASE_URL"), target, "--audit-url")
    raw_app = app_url or os.environ.get("CHATSEC_APP_DATABASE_URL")
    app = retarget(DatabaseURL.parse(raw_app), target, "--app-url") if raw_app else None
    keyring = _keyring(keyring_path)
    report = run_restore(file, target, admin, auditor, app, keyring)
    click.echo(f"restored {file} into {report.target}")
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


COMMANDS = [backup, restore]
