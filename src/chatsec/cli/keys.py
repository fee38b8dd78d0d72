"""`chatsec keys generate | register | status | rotate | retire | unretire | purge | seal | identity`.

docs/encryption.md (keys and rotation) and docs/keyring.md (the file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import click

from chatsec.cli import output
from chatsec.cli.identity import identity
from chatsec.cli.options import (
    database_url_option,
    format_option,
    keyring_option,
    lock_wait_option,
)
from chatsec.db.url import DatabaseURL, resolve_url
from chatsec.defaults import DEFAULT_BATCH_SIZE
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import PASSPHRASE_ENV, Keyring, passphrase_from_env, resolve_keyring_path

# The commands import chatsec.keys.manage / .rotate (the database driver) and rich's
# progress bar when they run: listing or completing them stays instant.

_keyring_option = keyring_option()
_wait_option = lock_wait_option()


def _load(keyring_path: Path | None, create: bool = False) -> Keyring:
    path = resolve_keyring_path(str(keyring_path) if keyring_path else None)
    if create:
        return Keyring.load_or_empty(path, passphrase_from_env())
    return Keyring.load(path, passphrase_from_env())


# What a rotation says as it reaches each recorded phase (the long ones wait or lock).
_PHASE_NOTES = {
    "draining": "draining the previous keys: waiting for transactions that may still use them",
    "vacuuming": "vacuuming chat.messages (a kill from here on is finished by the next run)",
}


@click.group()
def keys() -> None:
    """Encryption keys: a keyring file outside the database, registered ids inside it.

    The keyring path comes from --keyring or $CHATSEC_KEYRING; a sealed keyring opens
    with $CHATSEC_KEYRING_PASSPHRASE (chatsec keys seal seals one).
    """


@keys.command()
@_keyring_option
@database_url_option()
@click.option(
    "--no-register",
    is_flag=True,
    help="Only write the keyring; the key is active at once, so register it (chatsec keys "
    "register) before any application gets the keyring.",
)
@click.option(
    "--new-keyring",
    is_flag=True,
    help="Start a new keyring for a database that already has registered keys or encrypted "
    "messages (its keyring was lost): those messages stay unreadable.",
)
@_wait_option
def generate(
    keyring_path: Path | None,
    database_url: str | None,
    no_register: bool,
    new_keyring: bool,
    wait_s: float,
) -> None:
    """Add a new active key to the keyring (created 0600 if missing) and register it.

    The key is saved, registered, and only then made active in the file, so an
    application reloading the keyring never gets a key the database refuses. Refused
    while a rotation is unfinished, and for a missing keyring when the database has
    keys already (see --new-keyring).

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.keys.manage import generate_key

    keyring = _load(keyring_path, create=True)
    url: DatabaseURL | None = None
    if not no_register and (database_url or os.environ.get("CHATSEC_DATABASE_URL")):
        url = resolve_url(database_url)
    key = generate_key(keyring, url, wait_s, new_keyring)
    sealed = " (sealed)" if keyring.sealed else ""
    click.echo(f"generated key {key.id}, active, in {keyring.path}{sealed}")
    if url is None:
        click.echo("not registered in a database yet: chatsec keys register")
    else:
        click.echo(f"registered {key.id} in {url.target}")


@keys.command()
@_keyring_option
@database_url_option()
@_wait_option
def register(keyring_path: Path | None, database_url: str | None, wait_s: float) -> None:
    """Register every key of the keyring that is not retired (ids and verifiers only).

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.keys.manage import register_keys

    keyring = _load(keyring_path)
    url = resolve_url(database_url)
    added = register_keys(keyring, url, wait_s)
    click.echo(f"registered {', '.join(added) if added else 'nothing new'} in {url.target}")


@keys.command()
@_keyring_option
@database_url_option()
@format_option()
def status(keyring_path: Path | None, database_url: str | None, fmt: str) -> None:
    """Each key id: its status in the keyring, in the database, and how many rows use it.

    Without a keyring (--keyring or $CHATSEC_KEYRING) only the database's side is shown.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.keys.manage import key_status, last_rotation

    keyring = _load(keyring_path) if keyring_path else None
    url = resolve_url(database_url)
    if fmt == "json":
        current = last_rotation(url)
        document = {
            "database": url.target,
            "keyring": str(keyring.path) if keyring else None,
            "keys": [
                {
                    "id": r.id,
                    "keyring": r.in_keyring if keyring else None,
                    "registered": r.registered,
                    "rows": r.rows,
                }
                for r in key_status(keyring, url)
            ],
            "rotation": None
            if current is None
            else {
                "key_id": current.key_id,
                "phase": current.phase,
                "started_at": current.started_at.isoformat(),
                "finished_at": current.finished_at.isoformat() if current.finished_at else None,
            },
        }
        click.echo(json.dumps(document, indent=2))
        return
    table = output.table("key id", "keyring", "registered", "rows")
    for row in key_status(keyring, url):
        table.add_row(
            row.id or "(plaintext, no key)",
            row.in_keyring if keyring else "-",
            row.registered,
            str(row.rows),
        )
    output.console().print(table)
    if keyring is None:
        click.echo("no keyring given (--keyring or $CHATSEC_KEYRING): the database's side only")
    current = last_rotation(url)
    if current is not None:
        when = (
            f"finished {current.finished_at:%Y-%m-%d %H:%M:%S %Z}"
            if current.finished_at
            else f"UNFINISHED, phase {current.phase}, since "
            f"{current.started_at:%Y-%m-%d %H:%M:%S %Z} (chatsec keys rotate finishes it)"
        )
        click.echo(f"last rotation: to key {current.key_id}, {when}")


@keys.command(name="rotate")
@_keyring_option
@database_url_option()
@click.option(
    "--batch-size",
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    type=int,
    help="Rows re-encrypted per transaction.",
)
@click.option("--no-vacuum", is_flag=True, help="Skip VACUUM (ANALYZE) chat.messages at the end.")
@click.option(
    "--vacuum-full",
    is_flag=True,
    help="End with VACUUM FULL instead: rewrites chat.messages (exclusive lock meanwhile) so "
    "old versions, plaintext from before encryption included, leave the table's file.",
)
@_wait_option
def rotate_command(
    keyring_path: Path | None,
    database_url: str | None,
    batch_size: int,
    no_vacuum: bool,
    vacuum_full: bool,
    wait_s: float,
) -> None:
    """Re-encrypt every message under the active key, online; rerun to resume.

    A rotation is recorded in the database with its key and phase: a rerun after a
    kill (even during the final VACUUM) finishes that rotation with that key. With no
    unfinished rotation and no rows left under older keys, it first generates a new
    key (registered before it becomes active in the keyring). At the end the previous
    keys are drained: no transaction is handed them and none may write under them.
    Rows that cannot be decrypted are skipped and listed (exit 1).

    Exit 0 every row re-encrypted, 1 rows skipped (listed), 2 cannot run, 130
    interrupted (run it again: it resumes).
    """
    from chatsec.cli.progress import rows_progress
    from chatsec.keys.manage import last_rotation
    from chatsec.keys.rotate import rotate

    keyring = _load(keyring_path)
    url = resolve_url(database_url)
    unfinished = last_rotation(url)
    resuming = unfinished is not None and not unfinished.finished
    with rows_progress("re-encrypting") as bar:
        task = bar.add_task("rotate", total=None)

        def started(key_id: str, generated: bool, left: int) -> None:
            verb = (
                "generated"
                if generated
                else "resuming the unfinished rotation to"
                if resuming
                else "rotating to the"
            )
            bar.console.print(f"{verb} active key {key_id}: {left} row(s) to re-encrypt")
            bar.update(task, total=left, completed=0)

        def progressed(done: int, left: int) -> None:
            bar.update(task, completed=done, total=done + left)

        def phased(phase: str) -> None:
            if phase in _PHASE_NOTES:
                bar.console.print(_PHASE_NOTES[phase])

        result = rotate(
            keyring,
            url,
            batch_size,
            not no_vacuum,
            started,
            progressed,
            vacuum_full=vacuum_full,
            wait_s=wait_s,
            on_phase=phased,
        )
    if result.plaintext_rows:
        heap = (
            "VACUUM FULL rewrote the table"
            if vacuum_full
            else "their old versions survive in the table's free space until VACUUM FULL "
            "(rerun with --vacuum-full)"
        )
        click.echo(
            f"warning: {result.plaintext_rows} row(s) held plaintext from before encryption; "
            f"{heap}; they also survive in WAL archives and earlier backups: rotate those "
            "(docs/encryption.md)",
            err=True,
        )
    drained = f"; rotated out {', '.join(result.drained)}" if result.drained else ""
    if result.skipped:
        shown = ", ".join(result.skipped[:10])
        more = f" and {len(result.skipped) - 10} more" if len(result.skipped) > 10 else ""
        click.echo(
            f"{result.rows} row(s) re-encrypted under key {result.key_id}{drained}; "
            f"{len(result.skipped)} row(s) could not be decrypted and stay under their key: "
            f"{shown}{more}"
        )
        raise SystemExit(1)
    click.echo(
        f"every message is under key {result.key_id}: {result.rows} row(s) re-encrypted "
        f"in {result.passes} pass(es)"
        + (", VACUUM FULL" if vacuum_full else "" if no_vacuum else ", vacuumed")
        + drained
    )


@keys.command()
@click.argument("key_id")
@_keyring_option
@database_url_option()
@_wait_option
def retire(key_id: str, keyring_path: Path | None, database_url: str | None, wait_s: float) -> None:
    """Retire KEY_ID: refused for the active key and while any message uses it.

    Waits until every transaction open when the key was marked has ended, so a write
    already under way cannot leave a row under a retired key.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.keys.manage import retire_key

    keyring = _load(keyring_path)
    url = resolve_url(database_url)
    retire_key(keyring, url, key_id, wait_s)
    click.echo(f"retired key {key_id} in {keyring.path} and {url.target}")


@keys.command()
@click.argument("key_id")
@_keyring_option
@database_url_option()
@_wait_option
def unretire(
    key_id: str, keyring_path: Path | None, database_url: str | None, wait_s: float
) -> None:
    """Bring retired KEY_ID back as a previous key (readable again), while the keyring has it.

    For rows found under a key after it was retired, or to read an older backup on purpose.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.keys.manage import unretire_key

    keyring = _load(keyring_path)
    url = resolve_url(database_url)
    unretire_key(keyring, url, key_id, wait_s)
    click.echo(f"key {key_id} is a previous key again in {keyring.path} and {url.target}")


@keys.command()
@click.argument("key_id")
@_keyring_option
@database_url_option()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_wait_option
def purge(
    key_id: str, keyring_path: Path | None, database_url: str | None, yes: bool, wait_s: float
) -> None:
    """Destroy retired KEY_ID's secret in the keyring for good (crypto-shredding).

    Only a retired key no message of this database uses. Every row under it in an
    older backup becomes unreadable, and nothing can bring the key back.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.keys.manage import purge_key

    keyring = _load(keyring_path)
    url = resolve_url(database_url)
    if not yes:
        click.confirm(
            f"Destroy key {key_id} in {keyring.path}? Older backups holding rows under it "
            "become unreadable for good",
            abort=True,
        )
    purge_key(keyring, url, key_id, wait_s)
    click.echo(f"purged key {key_id}: its secret is gone from {keyring.path}")


@keys.command()
@_keyring_option
def seal(keyring_path: Path | None) -> None:
    """Seal an unsealed keyring with $CHATSEC_KEYRING_PASSPHRASE (scrypt + AES-256-GCM).

    The passphrase must be strong (at least 12 characters, hard to guess); from then on
    every command needs it to open the keyring.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    path = resolve_keyring_path(str(keyring_path) if keyring_path else None)
    passphrase = passphrase_from_env()
    if passphrase is None:
        raise ChatsecError(f"set {PASSPHRASE_ENV} to the passphrase to seal {path} with")
    Keyring.seal_existing(path, passphrase)
    click.echo(f"sealed keyring {path}")


@keys.command()
@_keyring_option
def unseal(keyring_path: Path | None) -> None:
    """Save a sealed keyring as plain JSON (mode 0600), opened with $CHATSEC_KEYRING_PASSPHRASE.

    For a keyring whose protection moves elsewhere (an encrypted volume, a secret
    store); anyone who can read the file then has the keys.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    path = resolve_keyring_path(str(keyring_path) if keyring_path else None)
    passphrase = passphrase_from_env()
    if passphrase is None:
        raise ChatsecError(f"set {PASSPHRASE_ENV} to the passphrase {path} is sealed with")
    Keyring.unseal_existing(path, passphrase)
    click.echo(f"unsealed keyring {path}: plain JSON, mode 0600; unset {PASSPHRASE_ENV}")


keys.add_command(identity)

COMMANDS = [keys]
