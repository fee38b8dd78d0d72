"""`chatsec deploy`, `rollback`, `status`, `current` and `history`."""

from __future__ import annotations

import json

import click

from chatsec.cli.options import database_url_option, format_option, lock_wait_option
from chatsec.db.url import resolve_url

# Each command imports chatsec.migrate.runner (Alembic, SQLAlchemy, the driver) when it
# runs: listing or completing the commands stays instant.


@click.command()
@database_url_option()
@click.option("--to", "to", default="head", show_default=True, help="Target revision.")
@click.option(
    "--sql", is_flag=True, help="Print the SQL for review instead of running it (no connection)."
)
@lock_wait_option()
def deploy(database_url: str | None, to: str, sql: bool, wait_s: float) -> None:
    """Upgrade the chat database to a revision (default: head).

    Holds chatsec's lock on the database meanwhile: a second deploy (or a key
    rotation, a rollback, a restore) waits for it, then finds nothing left to do.
    Refused for a revision older than the database's (that is a rollback).

    Exit 0 deployed (or already there), 2 cannot run, 130 interrupted (nothing of the
    interrupted revision is kept: run it again).
    """
    from chatsec.migrate import runner

    if sql:
        click.echo(runner.offline_sql(to), nl=False)
        return
    url = resolve_url(database_url)
    before = runner.status(url)
    runner.deploy(url, to, wait_s=wait_s)
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
@click.option(
    "--yes", is_flag=True, help="Drop the tables and columns that hold data (listed first)."
)
@click.option(
    "--sql",
    is_flag=True,
    help="Print the SQL of the downgrade from the current revision for review, run nothing "
    "(it does not hold the count of what it would drop: a real rollback lists that first).",
)
@lock_wait_option()
def rollback(database_url: str | None, to: str, yes: bool, sql: bool, wait_s: float) -> None:
    """Downgrade the chat database to an earlier revision.

    The downgrade runs in one transaction that first counts what it would drop:
    tables with rows, columns with values. Any such data and it is rolled back,
    listed, and the exit is 2, unless --yes. Below revision 0003 is refused while
    messages are encrypted (they would pass for plaintext), except to base. Refused for
    the current revision or a newer one.

    Exit 0 rolled back, 2 refused or cannot run, 130 interrupted (nothing changed).
    """
    from chatsec.migrate import runner

    url = resolve_url(database_url)
    if sql:
        click.echo(runner.offline_downgrade_sql(url, to), nl=False)
        return
    try:
        losses = runner.rollback(url, to, wait_s=wait_s, accept_loss=yes)
    except runner.RollbackWouldLoseData as refused:
        for loss in refused.losses:
            click.echo(f"would drop {loss}", err=True)
        raise
    for loss in losses:
        click.echo(f"dropped {loss}")
    after = runner.status(url)
    click.echo(f"rolled back {url.target} to {','.join(after.current) or 'base'}")


_format_option = format_option()


@click.command()
@database_url_option()
@_format_option
def status(database_url: str | None, fmt: str) -> None:
    """Show the current revision, the head shipped with chatsec, and pending revisions.

    Exit 0 up to date, 1 revisions pending, 2 cannot run.
    """
    from chatsec.migrate import runner

    url = resolve_url(database_url)
    state = runner.status(url)
    if fmt == "json":
        document = {
            "database": url.target,
            "current": list(state.current),
            "heads": list(state.heads),
            "pending": list(state.pending),
            "up_to_date": state.up_to_date,
        }
        click.echo(json.dumps(document, indent=2))
    else:
        click.echo(f"database: {url.target}")
        click.echo(f"current:  {', '.join(state.current) or 'base (empty)'}")
        click.echo(f"head:     {', '.join(state.heads)}")
        click.echo(f"pending:  {', '.join(state.pending) or 'none'}")
    if not state.up_to_date:
        raise SystemExit(1)


@click.command()
@database_url_option()
@_format_option
def current(database_url: str | None, fmt: str) -> None:
    """Print the database's current revision ('base' when nothing is deployed).

    Exit 0, 2 when it cannot run.
    """
    from chatsec.migrate import runner

    url = resolve_url(database_url)
    revisions = list(runner.status(url).current)
    if fmt == "json":
        click.echo(json.dumps({"database": url.target, "current": revisions}, indent=2))
    else:
        click.echo(", ".join(revisions) or "base")


@click.command()
@_format_option
def history(fmt: str) -> None:
    """List the revisions chatsec ships, oldest first, with what each does. No connection.

    Exit 0.
    """
    from chatsec.migrate import runner

    entries = runner.history()
    if fmt == "json":
        click.echo(json.dumps([entry.to_json() for entry in entries], indent=2))
        return
    for entry in entries:
        head = " (head)" if entry.head else ""
        click.echo(f"{entry.down_revision or 'base'} -> {entry.revision}{head}, {entry.message}")


@click.command("harden-database")
@database_url_option("CHATSEC_ADMIN_DATABASE_URL", "superuser")
def harden_database(database_url: str | None) -> None:
    """Close what only a superuser can close in the chat database; run once, before deploy.

    Revokes EXECUTE on the large-object functions (lo_create, lo_put, loread, ...)
    from PUBLIC in the database the URL names: large objects live outside row-level
    security and encryption, and the migrator cannot revoke them because the
    bootstrap superuser owns them. Revision 0007 refuses to deploy until this is done.
    Idempotent. Exit 2 when the login is not a superuser.
    """
    from chatsec.db.connect import connect
    from chatsec.ops.harden import close_large_objects

    url = resolve_url(database_url, "CHATSEC_ADMIN_DATABASE_URL")
    with connect(url, autocommit=True, application_name="chatsec harden-database") as conn:
        revoked = close_large_objects(conn)
    done = (
        f"revoked EXECUTE from PUBLIC on {len(revoked)} function(s)" if revoked else "nothing to do"
    )
    click.echo(f"{url.target}: large-object functions closed to PUBLIC ({done})")


COMMANDS = [deploy, rollback, status, current, history, harden_database]
