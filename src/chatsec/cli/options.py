"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from chatsec.defaults import DEFAULT_WAIT_S

F = TypeVar("F", bound=Callable[..., object])


def database_url_option(
    env_var: str = "CHATSEC_DATABASE_URL", role: str = "migrator"
) -> Callable[[F], F]:
    return click.option(
        "--database-url",
        "database_url",
        metavar="URL",
        default=None,
        help=f"PostgreSQL URL of the {role} login (default: ${env_var}). Needs "
        "sslmode=verify-full unless $CHATSEC_ALLOW_INSECURE_TLS=1; a password left out of the "
        "URL is read from $PGPASSFILE (~/.pgpass).",
    )


DEFAULT_SANDBOX_DIR = Path(".chatsec/sandbox")


def sandbox_dir_option(help: str = "Sandbox directory.") -> Callable[[F], F]:
    return click.option(
        "--dir",
        "directory",
        type=click.Path(file_okay=False, path_type=Path),
        default=DEFAULT_SANDBOX_DIR,
        show_default=True,
        help=help,
    )


def keyring_option(help: str = "Keyring file (default: $CHATSEC_KEYRING).") -> Callable[[F], F]:
    """--keyring PATH, passed as `keyring_path` (None when not given)."""
    return click.option(
        "--keyring",
        "keyring_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        envvar="CHATSEC_KEYRING",
        help=f"{help} A sealed keyring opens with $CHATSEC_KEYRING_PASSPHRASE.",
    )


def lock_wait_option() -> Callable[[F], F]:
    """--wait SECONDS, passed as `wait_s`: how long to wait for another command's lock."""
    return click.option(
        "--wait",
        "wait_s",
        type=click.FloatRange(min=0),
        default=DEFAULT_WAIT_S,
        show_default=True,
        metavar="SECONDS",
        help="How long to wait while another chatsec command holds the database's (or the "
        "keyring's) lock; then exit 2 naming it. 0: do not wait.",
    )


def format_option(help: str = "json: one stable document on stdout.") -> Callable[[F], F]:
    """--format text|json, passed as `fmt` (default text)."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help=help,
    )
