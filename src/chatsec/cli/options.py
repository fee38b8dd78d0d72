"""Options shared by several commands."""

from __future__ import annotations

from collections.abc import Callable
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
