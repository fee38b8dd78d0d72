"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

F = TypeVar("F", bound=Callable[..., object])


def database_url_option(
    env_var: str = "CHATSEC_DATABASE_URL", role: str = "migrator"
) -> Callable[[F], F]:
    return click.option(
        "--database-url",
        "database_url",
        metavar="URL",
        default=None,
        help=f"PostgreSQL URL of the {role} login (default: ${env_var}).",
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
        help=help,
    )
