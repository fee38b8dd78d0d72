"""The root `chatsec` group: registers the commands and turns expected errors into one line."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any, cast

import click
from click.shell_completion import CompletionItem

from chatsec import __version__
from chatsec.errors import ChatsecError

# Exit codes, for every command: 0 ok, 1 findings / drift / pending, 2 cannot run,
# 130 interrupted (Ctrl-C, as shells report SIGINT).
EXIT_INTERRUPTED = 130


# Every command, where it lives, and its one-line help: `chatsec --help` and shell
# completion list them without importing them (psycopg, SQLAlchemy and Alembic take over
# a second to import). tests/test_cli_edges.py keeps the help lines equal to the commands'.
LAZY_COMMANDS: dict[str, tuple[str, str]] = {
    "audit": ("chatsec.cli.audit", "Prove that the declared security is in force on a live database."),
    "backup": ("chatsec.cli.backup", "Back up the chat database, verify the file, and sign its manifest."),
    "bench": ("chatsec.cli.bench", "Generate a chat in a dedicated database and measure what RLS and encryption cost."),
    "current": ("chatsec.cli.migrations", "Print the database's current revision ('base' when nothing is deployed)."),
    "demo": ("chatsec.cli.demo", "Start the sandbox if needed, deploy, load a sample chat, show how to connect, and audit."),
    "deploy": ("chatsec.cli.migrations", "Upgrade the chat database to a revision (default: head)."),
    "doctor": ("chatsec.cli.doctor", "Health and statistics: connections, locks, top statements, index and table statistics."),
    "harden-database": ("chatsec.cli.migrations", "Close what only a superuser can close in the chat database; run once, before deploy."),
    "history": ("chatsec.cli.migrations", "List the revisions chatsec ships, oldest first, with what each does."),
    "keys": ("chatsec.cli.keys", "Encryption keys: a keyring file outside the database, registered ids inside it."),
    "plan": ("chatsec.cli.policy", "Compare policies/ with the live database and print every difference."),
    "restore": ("chatsec.cli.backup", "Restore FILE into an empty database, then check revision, audit and decryption."),
    "revision": ("chatsec.cli.policy", "Write a new revision into versions/ holding the exact SQL delta from head to policies/."),
    "rollback": ("chatsec.cli.migrations", "Downgrade the chat database to an earlier revision."),
    "sandbox": ("chatsec.cli.sandbox", "Run a local PostgreSQL cluster for chatsec: TLS only, SCRAM passwords, random secrets."),
    "ssl": ("chatsec.cli.ssl", "Check the server's TLS from the outside."),
    "status": ("chatsec.cli.migrations", "Show the current revision, the head shipped with chatsec, and pending revisions."),
}  # fmt: skip


class ChatsecGroup(click.Group):
    """Commands imported on first use; expected errors print one line on stderr and exit
    with their code, never a traceback."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(LAZY_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in LAZY_COMMANDS:
            return None
        module = importlib.import_module(LAZY_COMMANDS[cmd_name][0])
        for command in module.COMMANDS:
            if command.name == cmd_name:
                return cast(click.Command, command)
        raise RuntimeError(f"{LAZY_COMMANDS[cmd_name][0]} has no command {cmd_name}")

    def shell_complete(self, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
        # click's own asks every command whether it is hidden: that imports them all.
        items = [
            CompletionItem(name, help=help_)
            for name, (_, help_) in sorted(LAZY_COMMANDS.items())
            if name.startswith(incomplete)
        ]
        return items + click.Command.shell_complete(self, ctx, incomplete)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(
                [(name, help_) for name, (_, help_) in sorted(LAZY_COMMANDS.items())]
            )

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ChatsecError as exc:
            click.echo(f"chatsec: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            # Every command changes the database in transactions and files by rename, so
            # an interruption leaves the last committed step; running it again resumes
            # (a rotation, a deploy) or starts over (a backup, a bench).
            click.echo(
                "chatsec: interrupted: what was committed stays; run the same command again "
                "to resume or redo it",
                err=True,
            )
            sys.exit(EXIT_INTERRUPTED)
        except OSError as exc:
            # A file the user named (or its directory): unreadable, not writable, no space.
            where = f": {exc.filename}" if exc.filename else ""
            click.echo(f"chatsec: error: {exc.strerror or exc}{where}", err=True)
            sys.exit(2)
        except Exception as exc:
            import psycopg  # imported by then: only a command that connected raises it

            if not isinstance(exc, psycopg.Error):
                raise
            # A server-side failure mid-command (lost connection, permission): one line.
            reason = (exc.diag.message_primary if exc.diag else None) or str(exc).strip()
            click.echo(f"chatsec: error: database: {reason.splitlines()[0]}", err=True)
            sys.exit(2)


@click.group(cls=ChatsecGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chatsec")
@click.option(
    "--no-color",
    is_flag=True,
    help="No colour in any output (as when NO_COLOR is set). Tables are plain aligned text "
    "whenever stdout is not a terminal.",
)
def cli(no_color: bool) -> None:
    """chatsec: deploy a chat database's schema and security policies, and prove them in force.

    Database URLs come from --database-url or CHATSEC_DATABASE_URL (migrator),
    CHATSEC_APP_DATABASE_URL (application) and CHATSEC_AUDIT_DATABASE_URL (auditor).
    chatsec connects only with sslmode=verify-full unless CHATSEC_ALLOW_INSECURE_TLS=1.

    Exit codes, every command: 0 ok, 1 findings / drift / pending, 2 cannot run (one line
    on stderr), 130 interrupted.
    """
    if no_color:
        os.environ["NO_COLOR"] = "1"


def main() -> None:
    cli(prog_name="chatsec")
