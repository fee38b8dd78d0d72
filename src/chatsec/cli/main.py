"""The root `chatsec` group: registers the commands and turns expected errors into one line."""

from __future__ import annotations

import sys
from typing import Any

import click
import psycopg

from chatsec import __version__
from chatsec.errors import ChatsecError


class ChatsecGroup(click.Group):
    """Expected errors print one line on stderr and exit with their code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatsecError as exc:
            click.echo(f"chatsec: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except psycopg.Error as exc:
            # A server-side failure mid-command (lost connection, permission): one line.
            reason = (exc.diag.message_primary if exc.diag else None) or str(exc).strip()
            click.echo(f"chatsec: error: database: {reason.splitlines()[0]}", err=True)
            sys.exit(2)


@click.group(cls=ChatsecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chatsec")
def cli() -> None:
    """chatsec: deploy a chat database's schema and security policies, and prove them in force.

    Database URLs come from --database-url or CHATSEC_DATABASE_URL (migrator),
    CHATSEC_APP_DATABASE_URL (application) and CHATSEC_AUDIT_DATABASE_URL (auditor).
    chatsec connects only with sslmode=verify-full unless CHATSEC_ALLOW_INSECURE_TLS=1.
    """


def _register() -> None:
    from chatsec.cli import (
        audit,
        backup,
        bench,
        demo,
        doctor,
        keys,
        migrations,
        policy,
        sandbox,
        ssl,
    )

    for module in (sandbox, migrations, policy, keys, audit, ssl, doctor, backup, demo, bench):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="chatsec")
