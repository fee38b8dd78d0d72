"""`chatsec deploy`, `rollback` and `status`."""

from __future__ import annotations

import click

from chatsec.cli.options import database_url_option
from chatsec.db.url import resolve_url
from chatsec.migrate import runner


@click.command()
@database_url_option()
@click.option("--to", "to", default="head", show_default=True, help="Target revision.")
@click.option(
    "--sql", is_flag=True, help="Print the SQL for review instead of running it (no connection)."
)
def deploy(database_url: str | None, to: str, sql: bool) -> None:
    """Upgrade the chat database to a revision (default: head)."""
    if sql:
        click.echo(runner.offline_sql(to), nl=False)
        return
    url = resolve_url(database_url)
    before = runner.status(url)
    runner.deploy(url, to)
    after = runner.status(url)
    click.echo(
        f"deployed {url.target}: {','.join(before.current) or 'base'} -> "
        f"{','.join(after.current) or 'base'}"
    )


@click.command()
@database_url_option()
@click.option(
    "--to", "to", required=True, help="Revision to go down to ('base' removes everything)."
)
def rollback(database_url: str | None, to: str) -> None:
    """Downgrade the chat database to an earlier revision."""
    url = resolve_url(database_url)
    runner.rollback(url, to)
    after = runner.status(url)
    click.echo(f"rolled back {url.target} to {','.join(after.current) or 'base'}")


@click.command()
@database_url_option()
def status(database_url: str | None) -> None:
    """Show the current revision, the head shipped with chatsec, and pending revisions.

    Exits 0 when up to date, 1 when revisions are pending.
    """
    url = resolve_url(database_url)
    state = runner.status(url)
    click.echo(f"database: {url.target}")
    click.echo(f"current:  {', '.join(state.current) or 'base (empty)'}")
    click.echo(f"head:     {', '.join(state.heads)}")
    click.echo(f"pending:  {', '.join(state.pending) or 'none'}")
    if not state.up_to_date:
        raise SystemExit(1)


COMMANDS = [deploy, rollback, status]
