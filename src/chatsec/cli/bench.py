"""`chatsec bench`: RLS and encryption costs measured side by side (BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from chatsec.bench.config import FULL, QUICK, preset

if TYPE_CHECKING:  # the benchmark and the driver load when the command runs
    from chatsec.bench.target import Logins
from chatsec.cli import output
from chatsec.cli.options import DEFAULT_SANDBOX_DIR as DEFAULT_DIR
from chatsec.cli.options import format_option
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError


def _logins(
    directory: Path, migrator: str | None, app: str | None, admin: str | None, audit: str | None
) -> Logins:
    from chatsec.bench.target import Logins, sandbox_logins

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


def _default(name: str) -> str:
    full, quick = getattr(FULL, name, None), getattr(QUICK, name, None)
    if full is None:
        full, quick = getattr(FULL.scale, name), getattr(QUICK.scale, name)
    return f"default {full:,}; --quick {quick:,}"


@click.command()
@click.option("--quick", is_flag=True, help="Small scale and few repeats: a smoke run for CI.")
@click.option("--users", type=int, default=None, help=f"Generated users ({_default('users')}).")
@click.option(
    "--threads", type=int, default=None, help=f"Generated threads ({_default('threads')})."
)
@click.option(
    "--messages", type=int, default=None, help=f"Generated messages ({_default('messages')})."
)
@click.option(
    "--seed", type=int, default=None, help="Seed of the generated chat and of the user sample (1)."
)
@click.option(
    "--users-sampled",
    type=int,
    default=None,
    help=f"Users timed, the heaviest always among them ({_default('users_sampled')}).",
)
@click.option(
    "--repeat",
    type=int,
    default=None,
    help=f"Timed runs per user and side, and of every other figure ({_default('repeat')}).",
)
@click.option(
    "--design-repeat",
    type=int,
    default=None,
    help=f"Timed runs per user and side of the design's texts ({_default('design_repeat')}).",
)
@click.option(
    "--warmup",
    type=int,
    default=None,
    help=f"Untimed rounds per user before the timed ones ({_default('warmup')}).",
)
@click.option(
    "--batch",
    "insert_batch",
    type=int,
    default=None,
    help=f"Rows per insert batch ({_default('insert_batch')}).",
)
@click.option(
    "--rotate-batch",
    type=int,
    default=None,
    help=f"Rows per rotation batch, floor alike ({_default('rotate_batch')}).",
)
@format_option("json: the whole report, every figure and per-user run, on stdout.")
@click.option(
    "--explain",
    is_flag=True,
    help="Add EXPLAIN (ANALYZE, BUFFERS) of every query for the heaviest user.",
)
@click.option("--keep", is_flag=True, help="Keep the bench database afterwards.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_DIR,
    show_default=True,
    help="Sandbox directory (without URLs).",
)
@click.option(
    "--database-url",
    metavar="URL",
    default=None,
    help="Migrator login (any database). Every URL needs sslmode=verify-full unless "
    "$CHATSEC_ALLOW_INSECURE_TLS=1.",
)
@click.option("--app-url", metavar="URL", default=None, help="Application login (app_user).")
@click.option(
    "--admin-url",
    metavar="URL",
    default=None,
    help="Superuser login: creates the bench database, writes the data, RLS baseline.",
)
@click.option("--audit-url", metavar="URL", default=None, help="Auditor login, for the audit time.")
def bench(
    quick: bool,
    fmt: str,
    explain: bool,
    keep: bool,
    directory: Path,
    database_url: str | None,
    app_url: str | None,
    admin_url: str | None,
    audit_url: str | None,
    **sizes: int | None,
) -> None:
    """Generate a chat in a dedicated database and measure what RLS and encryption cost.

    Every comparison is interleaved run by run in this one run: chatsec's Thread List
    and Message History, and the design's literal texts, as the app login under RLS
    against the superuser, per sampled user (p10 / median / p90 over users, the
    heaviest user separately); decryption per row; encrypted against plaintext
    inserts; a rotation of the whole table against a no-crypto rewrite of every row.
    Without URLs it uses (and starts) the sandbox in --dir. The database is dropped
    at the end unless --keep.

    Exit 0 measured (whether or not targets are met: see the verdicts), 2 cannot run, 130 interrupted (the bench database is dropped unless --keep).
    """
    config = preset(quick, explain=explain, keep=keep, **sizes)
    config.check()
    logins = _logins(directory, database_url, app_url, admin_url, audit_url)
    from chatsec.bench.report import print_text, to_json
    from chatsec.bench.run import run_bench

    err = output.console(stderr=True)
    with err.status("benchmark") as status:

        def say(line: str) -> None:
            err.print(f"  {line}", markup=False, highlight=False)
            status.update(line)

        report = run_bench(logins, config, say)
    if fmt == "json":
        click.echo(to_json(report))
    else:
        print_text(report, output.console())


COMMANDS = [bench]
