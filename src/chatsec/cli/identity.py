"""`chatsec keys identity generate | register | rotate | retire | status`: the keys that sign identities.

docs/identity.md (the scheme, rotation, threat model).
"""

from __future__ import annotations

from pathlib import Path

import click

from chatsec.cli import output
from chatsec.cli.options import database_url_option, lock_wait_option
from chatsec.db.url import resolve_url
from chatsec.errors import ChatsecError
from chatsec.identity.signer import IDENTITY_KEYRING_ENV
from chatsec.keys.keyring import Keyring, passphrase_from_env

_identity_keyring_option = click.option(
    "--identity-keyring",
    "keyring_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar=IDENTITY_KEYRING_ENV,
    help=f"Identity keyring file (default: ${IDENTITY_KEYRING_ENV}); sealed, it opens with "
    "$CHATSEC_KEYRING_PASSPHRASE.",
)
_wait_option = lock_wait_option()


def _load(keyring_path: Path | None, create: bool = False) -> Keyring:
    if keyring_path is None:
        raise ChatsecError(
            f"no identity keyring given: pass --identity-keyring PATH or set {IDENTITY_KEYRING_ENV}"
        )
    if create:
        return Keyring.load_or_empty(keyring_path, passphrase_from_env())
    return Keyring.load(keyring_path, passphrase_from_env())


@click.group()
def identity() -> None:
    """Identity keys: they sign the token that says which chat user a transaction acts for.

    A keyring file of their own ($CHATSEC_IDENTITY_KEYRING, sealed with
    $CHATSEC_KEYRING_PASSPHRASE when set), registered in chat.identity_keys, which only
    the verifying function's role can read. The application signs with the active key;
    every registered key that is not retired verifies.
    """


@identity.command()
@_identity_keyring_option
@database_url_option()
@_wait_option
def generate(keyring_path: Path | None, database_url: str | None, wait_s: float) -> None:
    """Add a new active identity key (keyring created 0600 if missing), registered first.

    The key it replaces keeps verifying until retired.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.identity.manage import generate_identity_key

    keyring = _load(keyring_path, create=True)
    url = resolve_url(database_url)
    key, replaced = generate_identity_key(keyring, url, wait_s)
    click.echo(
        f"generated identity key {key.id}, active, in {keyring.path}; registered in {url.target}"
    )
    if replaced is not None:
        click.echo(f"{replaced.id} still verifies: retire it once every application has reloaded")


@identity.command()
@_identity_keyring_option
@database_url_option()
@_wait_option
def register(keyring_path: Path | None, database_url: str | None, wait_s: float) -> None:
    """Register the identity keyring's keys that are not retired (after a restore: a backup
    holds no identity key, so a restored database verifies none until this).

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.identity.manage import register_identity_keyring

    keyring = _load(keyring_path)
    url = resolve_url(database_url)
    added = register_identity_keyring(keyring, url, wait_s)
    click.echo(f"registered {', '.join(added) if added else 'nothing new'} in {url.target}")


@identity.command()
@_identity_keyring_option
@database_url_option()
@_wait_option
def rotate(keyring_path: Path | None, database_url: str | None, wait_s: float) -> None:
    """Replace the active identity key; keys older than the one replaced are retired.

    Two keys verify during the switch: the new one and the one it replaced.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.identity.manage import rotate_identity_key

    keyring = _load(keyring_path)
    url = resolve_url(database_url)
    result = rotate_identity_key(keyring, url, wait_s)
    click.echo(f"identity key {result.key.id} is active in {keyring.path} and registered")
    if result.retired:
        click.echo(f"retired {', '.join(result.retired)}")
    if result.replaced is not None:
        click.echo(
            f"{result.replaced.id} still verifies until every application process has "
            f"reloaded the identity keyring: then chatsec keys identity retire {result.replaced.id}"
        )


@identity.command()
@click.argument("key_id")
@_identity_keyring_option
@database_url_option()
@_wait_option
def retire(key_id: str, keyring_path: Path | None, database_url: str | None, wait_s: float) -> None:
    """Stop KEY_ID verifying: tokens signed with it give no identity. Not the active key.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.identity.manage import retire_identity_key

    keyring = _load(keyring_path)
    url = resolve_url(database_url)
    retire_identity_key(keyring, url, key_id, wait_s)
    click.echo(f"retired identity key {key_id} in {url.target} and {keyring.path}")


@identity.command()
@_identity_keyring_option
@database_url_option()
def status(keyring_path: Path | None, database_url: str | None) -> None:
    """Each identity key: its status in the keyring and in the database.

    Exit 0 done, 2 refused or cannot run (nothing changed), 130 interrupted (run it again).
    """
    from chatsec.identity.manage import identity_status

    keyring = _load(keyring_path) if keyring_path else None
    url = resolve_url(database_url)
    table = output.table("identity key id", "keyring", "database")
    rows = identity_status(keyring, url)
    for row in rows:
        table.add_row(row.id, row.in_keyring, row.in_database)
    output.console().print(table)
    if not any(r.in_database == "verifies" for r in rows):
        click.echo("no identity key verifies: no transaction has an identity")
