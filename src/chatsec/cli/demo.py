"""`chatsec demo`: the whole tool end to end on the sandbox."""

from __future__ import annotations

from pathlib import Path

import click

from chatsec.cli.options import sandbox_dir_option


@click.command()
@sandbox_dir_option()
def demo(directory: Path) -> None:
    """Start the sandbox if needed, deploy, load a sample chat, show how to connect, and audit.

    Exits with the audit's code: 0 when every check passes, 1 when one fails.
    """
    from chatsec.demo import run_demo

    raise SystemExit(run_demo(directory, click.echo))


COMMANDS = [demo]
