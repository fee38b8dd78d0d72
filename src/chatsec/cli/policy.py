"""`chatsec plan` and `chatsec revision`: policies/ against a live database, and into versions/."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatsec.cli.options import database_url_option, format_option
from chatsec.db.url import DatabaseURL, resolve_url
from chatsec.errors import ChatsecError
from chatsec.paths import checkout_versions_dir
from chatsec.policy.model import OWNER_ROLE

if TYPE_CHECKING:
    from chatsec.policy.compare import Change

# The commands import the comparison, the driver and Alembic when they run: listing or
# completing them stays instant.

_policies_option = click.option(
    "--policies",
    "policies",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Policy directory (default: the policies/ shipped with chatsec).",
)


def _print_changes(changes: list[Change], show_sql: bool) -> None:
    from chatsec.policy.compare import MIGRATOR

    for c in changes:
        colour = {"missing": "yellow", "extra": "red", "changed": "magenta"}[c.action]
        click.echo(click.style(f"{c.action:8}", fg=colour) + f" {c.kind:18} {c.object}: {c.detail}")
        if show_sql:
            if c.run_as != OWNER_ROLE or c.create_in:
                who = "the migrator login" if c.run_as == MIGRATOR else c.run_as
                opened = "".join(f", with CREATE on {s} for {r}" for s, r in c.create_in)
                click.echo(f"    -- as {who}{opened}")
            for stmt in c.up:
                click.echo("    " + stmt.replace("\n", "\n    ") + ";")


@click.command()
@database_url_option()
@_policies_option
@click.option(
    "--sql/--no-sql",
    "show_sql",
    default=True,
    show_default=True,
    help="Show the SQL that would bring the database to the declaration.",
)
@format_option("json: one stable document (every difference with its SQL) on stdout.")
def plan(database_url: str | None, policies: Path | None, show_sql: bool, fmt: str) -> None:
    """Compare policies/ with the live database and print every difference.

    Policy expressions are compared as PostgreSQL normalizes them, so formatting
    never shows as a difference. Exit 0 in sync, 1 when it differs, 2 when it cannot run.
    """
    from chatsec.db.connect import connect
    from chatsec.policy.compare import diff_live
    from chatsec.policy.load import load_policies

    declared = load_policies(policies)
    url = resolve_url(database_url)
    with connect(url) as conn:
        changes = diff_live(conn, declared)
    if fmt == "json":
        document = {
            "database": url.target,
            "in_sync": not changes,
            "changes": [
                {
                    "kind": c.kind,
                    "object": c.object,
                    "action": c.action,
                    "detail": c.detail,
                    "run_as": c.run_as,
                    "sql": list(c.up),
                }
                for c in changes
            ],
        }
        click.echo(json.dumps(document, indent=2))
        if changes:
            raise SystemExit(1)
        return
    if not changes:
        click.echo(f"{url.target}: in sync with policies/ (no changes)")
        return
    _print_changes(changes, show_sql)
    click.echo(f"{url.target}: {len(changes)} difference(s) from policies/")
    raise SystemExit(1)


@contextmanager
def _scratch_database(admin: DatabaseURL, migrator: DatabaseURL) -> Iterator[DatabaseURL]:
    """A throwaway database owned by the migrator, dropped afterwards."""
    from chatsec.db.connect import connect
    from chatsec.ops.harden import close_large_objects

    name = f"chatsec_dev_{secrets.token_hex(4)}"
    with connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" OWNER "{migrator.user}"')
    try:
        with connect(admin.with_database(name), autocommit=True) as conn:
            close_large_objects(conn)
        yield migrator.with_database(name)
    finally:
        with connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@click.command()
@click.option("-m", "--message", required=True, help="What the revision changes.")
@database_url_option()
@click.option(
    "--admin-url",
    "admin_url",
    metavar="URL",
    default=None,
    help="A login that may CREATE DATABASE, for the scratch database "
    "(default: $CHATSEC_ADMIN_DATABASE_URL).",
)
@_policies_option
@click.option(
    "--versions",
    "versions",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where to write the revision (default: the versions/ of a chatsec checkout; "
    "required when chatsec is installed as a package, which is never written to).",
)
def revision(
    message: str,
    database_url: str | None,
    admin_url: str | None,
    policies: Path | None,
    versions: Path | None,
) -> None:
    """Write a new revision into versions/ holding the exact SQL delta from head to policies/.

    A scratch database is upgraded to the current head and compared with policies/;
    the differences' SQL (upgrade and downgrade) is written literally into the file.

    Exit 0 written (or nothing to write), 2 cannot run, 130 interrupted (no file written).
    """
    from chatsec.db.connect import connect
    from chatsec.migrate import runner
    from chatsec.policy.compare import diff_live
    from chatsec.policy.load import load_policies
    from chatsec.policy.revision import next_revision_id, render_revision, slug

    declared = load_policies(policies)
    migrator = resolve_url(database_url)
    admin = resolve_url(admin_url, "CHATSEC_ADMIN_DATABASE_URL")
    target_dir = versions or checkout_versions_dir()
    if target_dir is None:
        raise ChatsecError(
            "chatsec is installed as a package: a revision never goes into it; pass "
            "--versions DIR (the versions/ of your chatsec checkout)"
        )
    if not target_dir.is_dir():
        raise ChatsecError(f"--versions {target_dir} is not a directory")
    heads = runner.script_directory().get_heads()
    if len(heads) != 1:
        raise ChatsecError(f"versions/ must have a single head, found {', '.join(heads)}")
    with _scratch_database(admin, migrator) as scratch:
        runner.deploy(scratch)
        with connect(scratch) as conn:
            changes = diff_live(conn, declared)
    if not changes:
        click.echo("policies/ matches head: no revision written")
        return
    rev = next_revision_id(target_dir, heads[0])
    path = target_dir / f"{rev}_{slug(message)}.py"
    path.write_text(render_revision(rev, heads[0], message, changes, declared), encoding="utf-8")
    _print_changes(changes, show_sql=False)
    click.echo(f"wrote {path} ({len(changes)} change(s))")


COMMANDS = [plan, revision]
