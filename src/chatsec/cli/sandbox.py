"""`chatsec sandbox start|stop|status|env|basebackup|pitr`: a throwaway TLS-only cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatsec.cli.options import DEFAULT_SANDBOX_DIR, sandbox_dir_option

if TYPE_CHECKING:
    from chatsec.sandbox import Sandbox


def _sandbox(directory: Path) -> Sandbox:
    # Imported when a command runs (it loads the database driver), not to list them.
    from chatsec.sandbox import Sandbox

    return Sandbox(directory)

_dir_option = sandbox_dir_option("Where the cluster, its certificates and its passwords live.")


@click.group()
def sandbox() -> None:
    """Run a local PostgreSQL cluster for chatsec: TLS only, SCRAM passwords, random secrets."""


@sandbox.command()
@_dir_option
@click.option("--archive", is_flag=True, help="Turn on WAL archiving into DIR/archive.")
def start(directory: Path, archive: bool) -> None:
    """Start the sandbox (create it on first use); harmless when it is already running.

    A new sandbox needs a missing or empty directory: exit 2 for one holding other files.

    Exit 0 running, 2 cannot start (or refused), 130 interrupted.
    """
    box = _sandbox(directory)
    box.start(archive=archive)
    state = box.status()
    click.echo(f"sandbox running at {state.directory} (127.0.0.1:{state.port}, pid {state.pid})")
    click.echo(f'connect with: eval "$(chatsec sandbox env --dir {state.directory})"')


@sandbox.command()
@_dir_option
def stop(directory: Path) -> None:
    """Stop the sandbox's server; no process is left behind.

    Exit 0 stopped (or was not running), 2 where no sandbox is.
    """
    box = _sandbox(directory)
    was_running = box.status().running if box.exists() else False
    box.stop()
    state = "stopped" if was_running else "was not running"
    click.echo(f"sandbox at {directory.resolve()} {state}")


@sandbox.command()
@_dir_option
def status(directory: Path) -> None:
    """Show whether the sandbox runs, its port and pid.

    Exit 0 running, 1 not running.
    """
    state = _sandbox(directory).status()
    if state.running:
        click.echo(
            f"running: 127.0.0.1:{state.port}, pid {state.pid}, dir {state.directory}"
            + (", WAL archiving on" if state.archive else "")
        )
    else:
        click.echo(f"not running (dir {state.directory})")
        raise SystemExit(1)


@sandbox.command()
@_dir_option
def env(directory: Path) -> None:
    """Print `export` lines for the sandbox's URLs: eval "$(chatsec sandbox env)".

    Exit 0, 2 when no sandbox runs there.
    """
    click.echo(_sandbox(directory).env_lines())


@sandbox.command()
@_dir_option
@click.option(
    "--output",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New directory for the base backup (plain format).",
)
def basebackup(directory: Path, output: Path) -> None:
    """Take a base backup (pg_basebackup) of a sandbox started with --archive.

    Exit 0 done, 2 cannot run, 130 interrupted.
    """
    path = _sandbox(directory).base_backup(output)
    click.echo(f"base backup in {path}; WAL from then on is archived in {directory}/archive")


@sandbox.command()
@click.option(
    "--base",
    required=True,
    type=click.Path(file_okay=False, exists=True, path_type=Path),
    help="Base backup made by `chatsec sandbox basebackup`.",
)
@click.option(
    "--target-time",
    required=True,
    metavar="TS",
    help="Recover up to this time (ISO 8601 with a zone, e.g. 2026-11-25T10:00:00+00:00).",
)
@click.option(
    "--dir",
    "directory",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New sandbox directory for the recovered cluster.",
)
@click.option(
    "--from-dir",
    "source",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_SANDBOX_DIR,
    show_default=True,
    help="Sandbox whose WAL archive, TLS files and passwords are used.",
)
def pitr(base: Path, target_time: str, directory: Path, source: Path) -> None:
    """Point-in-time recovery: a new sandbox from BASE plus archived WAL, up to TS.

    Exit 0 recovered, 2 cannot run, 130 interrupted.
    """
    from chatsec.ops.pitr import recover

    result = recover(base, target_time, directory, source)
    replayed = result.recovered_to.isoformat() if result.recovered_to else "no transaction"
    click.echo(
        f"recovered sandbox running at {result.directory} (127.0.0.1:{result.port}), "
        f"target {result.target_time.isoformat()}, last commit replayed: {replayed}"
    )
    click.echo(f'connect with: eval "$(chatsec sandbox env --dir {result.directory})"')


COMMANDS = [sandbox]
