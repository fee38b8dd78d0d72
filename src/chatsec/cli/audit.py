"""`chatsec audit`: the checks against a live database, as text, JSON, JUnit, SARIF or HTML."""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import click

from chatsec.audit.finding import Level
from chatsec.audit.formats import FORMATS
from chatsec.cli.options import database_url_option, keyring_option
from chatsec.cli.output import to_terminal
from chatsec.db.url import DatabaseURL, resolve_url
from chatsec.errors import ChatsecError


def write_output(text: str, output: Path | None) -> None:
    if output is None:
        click.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ChatsecError(f"cannot write {output}: {exc.strerror}") from None


def _check_list(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if not value or ctx.resilient_parsing:
        return
    from chatsec.audit.registry import all_checks

    for c in all_checks():
        click.echo(f"{c.id:28} {c.category:15} {c.level:8} {c.title}")
    ctx.exit(0)


@click.command()
@database_url_option("CHATSEC_AUDIT_DATABASE_URL", "auditor")
@click.option(
    "--app-url",
    "app_url",
    metavar="URL",
    default=None,
    help="Application login for the behavioural probes (default: $CHATSEC_APP_DATABASE_URL).",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option(
    "--output",
    "-o",
    "output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the report here instead of standard output.",
)
@click.option(
    "--fail-on",
    "fail_on",
    type=click.Choice(["error", "warning"]),
    default="error",
    show_default=True,
    help="Exit 1 when a finding reaches this level.",
)
@click.option(
    "--probe/--no-probe",
    "probe",
    default=True,
    show_default=True,
    help="Run the behavioural probes (app login isolation, non-TLS refusal).",
)
@click.option(
    "--check",
    "checks",
    multiple=True,
    metavar="ID",
    help="Run only this check (repeatable); see --list-checks.",
)
@click.option(
    "--ignore",
    "ignores",
    multiple=True,
    metavar="CHECK_ID[:OBJECT]",
    help="Accept this check's findings (or only the one about OBJECT, exact name): "
    "reported as suppressed, not counted for --fail-on. Repeatable.",
)
@click.option(
    "--ignore-file",
    "ignore_file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Allowlist of accepted findings, each with a reason "
    "(default: ./chatsec-audit.toml when present).",
)
@click.option(
    "--policies",
    "policies",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Policy directory (default: the policies/ shipped with chatsec).",
)
@keyring_option(
    "Keyring for the probe's messages when the encryption trigger is deployed "
    "(default: $CHATSEC_KEYRING)."
)
@click.option(
    "--identity-keyring",
    "identity_keyring",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar="CHATSEC_IDENTITY_KEYRING",
    help="Identity keyring: the probes sign their users' identities with it and check that "
    "expired, tampered and replayed tokens give none (default: $CHATSEC_IDENTITY_KEYRING).",
)
@click.option(
    "--list-checks",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_check_list,
    help="List the check ids and exit.",
)
def audit(
    database_url: str | None,
    app_url: str | None,
    fmt: str,
    output: Path | None,
    fail_on: str,
    probe: bool,
    checks: tuple[str, ...],
    ignores: tuple[str, ...],
    ignore_file: Path | None,
    policies: Path | None,
    keyring_path: Path | None,
    identity_keyring: Path | None,
) -> None:
    """Prove that the declared security is in force on a live database.

    Runs as the auditor login (catalog and settings only, no chat data). Exit 0
    when no finding reaches --fail-on, 1 when one does, 2 when the audit cannot run.
    """
    from chatsec.audit.allowlist import build_allowlist, resolve_allowlist_file
    from chatsec.audit.api import audit as run
    from chatsec.audit.report import render

    url = resolve_url(database_url, "CHATSEC_AUDIT_DATABASE_URL")
    raw_app = app_url or os.environ.get("CHATSEC_APP_DATABASE_URL")
    app = DatabaseURL.parse(raw_app) if raw_app else None
    level = cast(Level, fail_on)
    # Before connecting: a bad allowlist is a usage error, not a half-run audit.
    allowlist = build_allowlist(ignores, resolve_allowlist_file(ignore_file))
    report = run(
        url,
        app_url=app,
        policies=policies,
        check_ids=checks,
        probe=probe,
        keyring=keyring_path,
        identity_keyring=identity_keyring,
        allowlist=allowlist,
    )
    for notice in report.notices:
        click.echo(f"chatsec: warning: {notice}", err=True)
    terminal = output is None and to_terminal()
    color = fmt == "text" and terminal and not os.environ.get("NO_COLOR")
    # On a pipe the text report is plain aligned rows; a file (--output) keeps the boxes.
    plain = fmt == "text" and output is None and not terminal
    write_output(render(report, fmt, level, color=color, plain=plain), output)
    if output is not None and fmt != "text":
        from chatsec.audit.report.text import summary_line

        click.echo(summary_line(report, level), err=True)
    raise SystemExit(report.exit_code(level))


COMMANDS = [audit]
