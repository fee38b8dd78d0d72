"""`chatsec demo`: the whole tool end to end on the sandbox."""

from __future__ import annotations

from pathlib import Path

import click

from chatsec.cli.sandbox import DEFAULT_DIR
from chatsec.demo import run_demo


@click.command()
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Sandbox directory.",
)
def demo(directory: Path) -> None:
    """Start the sandbox if needed, deploy, load a sample chat, show how to connect, and audit.

    Exits with the audit's code: 0 when every check passes, 1 when one fails.
    """
    raise SystemExit(run_demo(directory, click.echo))


COMMANDS = [demo]
