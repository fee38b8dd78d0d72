"""`chatsec bench`: RLS and encryption costs measured side by side (BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from chatsec.bench.generate import Scale
from chatsec.bench.report import print_text, to_json
from chatsec.bench.run import BenchConfig, run_bench
from chatsec.bench.target import Logins, sandbox_logins
from chatsec.cli.options import DEFAULT_SANDBOX_DIR as DEFAULT_DIR
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError


def _logins(
    directory: Path, migrator: str | None, app: str | None, admin: str | None, audit: str | None
) -> Logins:
    given = [u for u in (migrator, app, admin) if u]
    if not given:
        return sandbox_logins(directory)
    if len(given) != 3:
        raise ChatsecError(
            "give all of --database-url, --app-url and --admin-url, or none (sandbox)"
        )
    assert migrator and app and admin
    return Logins(
        DatabaseURL.parse(migrator),
        DatabaseURL.parse(app),
        DatabaseURL.parse(admin),
        DatabaseURL.parse(audit) if audit else None,
    )


@click.command()
@click.option("--users", default=Scale.users, show_default=True, type=int)
@click.option("--threads", default=Scale.threads, show_default=True, type=int)
@click.option("--messages", default=Scale.messages, show_default=True, type=int)
@click.option(
    "--rotate-rows",
    default=Scale.rotate_rows,
    show_default=True,
    type=int,
    help="Messages written under an older key, re-encrypted by the rotation run.",
)
@click.option("--repeat", default=20, show_default=True, type=int, help="Timed runs per figure.")
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True
)
@click.option("--explain", is_flag=True, help="Print the EXPLAIN (ANALYZE, BUFFERS) plans.")
@click.option("--keep", is_flag=True, help="Keep the bench database afterwards.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Sandbox directory (without URLs).",
)
@click.option("--database-url", metavar="URL", default=None, help="Migrator login (any database).")
@click.option("--app-url", metavar="URL", default=None, help="Application login (app_user).")
@click.option(
    "--admin-url",
    metavar="URL",
    default=None,
    help="Superuser login: creates the bench database, writes the data, RLS baseline.",
)
@click.option("--audit-url", metavar="URL", default=None, help="Auditor login, for the audit time.")
def bench(
    users: int,
    threads: int,
    messages: int,
    rotate_rows: int,
    repeat: int,
    fmt: str,
    explain: bool,
    keep: bool,
    directory: Path,
    database_url: str | None,
    app_url: str | None,
    admin_url: str | None,
    audit_url: str | None,
) -> None:
    """Generate a chat in a dedicated database and measure what RLS and encryption cost.

    Without URLs it uses (and starts) the sandbox in --dir. The database is dropped
    at the end unless --keep.
    """
    config = BenchConfig(Scale(users, threads, messages, rotate_rows), repeat, keep=keep)
    config.check()
    logins = _logins(directory, database_url, app_url, admin_url, audit_url)
    err = Console(stderr=True)
    with err.status("benchmark") as status:

        def say(line: str) -> None:
            err.print(f"  {line}", markup=False, highlight=False)
            status.update(line)

        report = run_bench(logins, config, say)
    if fmt == "json":
        click.echo(to_json(report, explain))
    else:
        print_text(report, explain, Console())


COMMANDS = [bench]
