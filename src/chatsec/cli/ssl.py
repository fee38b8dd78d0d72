"""`chatsec ssl verify`: the server's certificate and TLS setup, as text or JSON."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import click

from chatsec.audit.finding import Level
from chatsec.cli.audit import write_output
from chatsec.db.url import resolve_url


def _nested(details: Mapping[str, Any], indent: int) -> str:
    """`key: value` lines, mappings indented under their key, lists comma-separated."""
    lines = []
    pad = " " * indent
    for key, value in details.items():
        if isinstance(value, Mapping):
            lines.append(f"{pad}{key}:\n{_nested(value, indent + 2)}")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: {', '.join(map(str, value)) or '-'}\n")
        else:
            lines.append(f"{pad}{key}: {value}\n")
    return "".join(lines)


def _text_details(details: Mapping[str, Any]) -> str:
    # The probe's result is too big for one line; every other detail keeps its one line.
    return "".join(f"  {k}:\n{_nested(v, 4)}" if k == "probe" else f"  {k}: {v}\n"
                   for k, v in details.items())


@click.group()
def ssl() -> None:
    """Check the server's TLS from the outside."""


@ssl.command()
@click.option("--database-url", "database_url", metavar="URL", default=None,
              help="PostgreSQL URL (default: $CHATSEC_AUDIT_DATABASE_URL, else "
                   "$CHATSEC_DATABASE_URL).")
@click.option("--sslrootcert", type=click.Path(dir_okay=False, exists=True, path_type=Path),
              default=None, help="CA certificate(s) (default: the URL's sslrootcert, else the "
                                 "system store).")
@click.option("--min-days", type=click.IntRange(min=0), default=30, show_default=True,
              help="Warn when the certificate expires within this many days.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@click.option("--output", "-o", "output", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the report here instead of standard output.")
@click.option("--fail-on", "fail_on", type=click.Choice(["error", "warning"]), default="error",
              show_default=True, help="Exit 1 when a finding reaches this level.")
def verify(database_url: str | None, sslrootcert: Path | None, min_days: int, fmt: str,
           output: Path | None, fail_on: str) -> None:
    """Handshake with the server itself and check chain, host name, expiry, key and hash.

    Also reports the negotiated protocol and cipher, the pg_stat_ssl row of a
    verify-full libpq session, and whether a non-TLS connection is refused; then tries
    each protocol version, each cipher suite of every accepted version below TLSv1.3,
    and each key-exchange group, one handshake each.
    Exit 0 when no finding reaches --fail-on, 1 when one does, 2 when it cannot run.
    """
    env = "CHATSEC_AUDIT_DATABASE_URL" if os.environ.get("CHATSEC_AUDIT_DATABASE_URL") else (
        "CHATSEC_DATABASE_URL")
    url = resolve_url(database_url, env)
    from chatsec.audit.report.json import report_document
    from chatsec.audit.report.text import render_text
    from chatsec.tls.verify import verify_server

    level = cast(Level, fail_on)
    result = verify_server(url, sslrootcert, min_days)
    if fmt == "json":
        doc = report_document(result.report, level)
        doc["tls"] = result.details
        text = json.dumps(doc, indent=2, default=str) + "\n"
    else:
        text = render_text(result.report, level).replace(
            "chatsec audit of", "chatsec ssl verify of", 1) + _text_details(result.details)
    write_output(text, output)
    raise SystemExit(result.report.exit_code(level))


COMMANDS = [ssl]
