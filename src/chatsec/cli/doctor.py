"""`chatsec doctor`: the health and statistics report, as rich tables or stable JSON."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from chatsec.cli import output
from chatsec.cli.options import database_url_option, format_option
from chatsec.db.url import resolve_url

if TYPE_CHECKING:  # the driver and rich load when the command runs, not to list it
    from rich.console import Console

    from chatsec.ops.doctor import Report

AUDIT_ENV = "CHATSEC_AUDIT_DATABASE_URL"


def _opt(value: object) -> str:
    return "-" if value is None else str(value)


def render_text(report: Report, console: Console) -> None:
    from chatsec.ops.doctor import human_size

    s = report.server
    console.print(
        f"[bold]{report.target}[/] PostgreSQL {s.version}, up since {s.started_at}, "
        f"as {s.connected_as}"
    )
    c = report.connections
    console.print(f"connections: {c.total} of {c.max_connections} (client backends)")
    for title, counts in (("state", c.by_state), ("role", c.by_role)):
        table = output.table(title=f"connections by {title}")
        table.add_column(title)
        table.add_column("count", justify="right")
        for item in counts:
            table.add_row(item.name, str(item.count))
        console.print(table)

    locks = output.table(title="locks: waiting, and relation locks held in this database")
    for col in ("pid", "role", "lock", "relation", "mode", "granted", "blocked by", "blocks",
                "wait s", "query"):  # fmt: skip
        locks.add_column(col)
    for lock in report.locks.waiting + report.locks.held:
        locks.add_row(
            str(lock.pid), lock.role, lock.locktype, _opt(lock.relation), lock.mode,
            "yes" if lock.granted else "WAITING", " ".join(map(str, lock.blocked_by)),
            " ".join(map(str, lock.blocks)), _opt(lock.waiting_s), lock.query[:60],
        )  # fmt: skip
    console.print(locks)

    st = report.statements
    if not st.available:
        console.print(f"[yellow]top statements unavailable:[/] {st.reason}")
    else:
        top = output.table(title="top statements by total time (pg_stat_statements)")
        for col in ("queryid", "role", "calls", "total ms", "mean ms", "rows/call", "query"):
            top.add_column(col, justify="right" if col in {"calls", "total ms", "mean ms",
                                                           "rows/call"} else "left")  # fmt: skip
        for stmt in st.top:
            top.add_row(
                _opt(stmt.queryid), stmt.role, str(stmt.calls), f"{stmt.total_ms:.1f}",
                f"{stmt.mean_ms:.3f}", f"{stmt.rows_per_call:.2f}", stmt.query[:80],
            )  # fmt: skip
        console.print(top)

    idx = output.table(title="indexes on the chat tables")
    for col in ("index", "table", "scans", "size", "est. bloat", "note"):
        idx.add_column(col)
    for i in report.indexes:
        note = "UNUSED (no scans since stats reset)" if i.unused else (
            "unique" if i.unique else "")  # fmt: skip
        bloat = "-" if i.estimated_bloat_ratio is None else f"{i.estimated_bloat_ratio:.0%}"
        idx.add_row(f"{i.schema}.{i.index}", i.table, str(i.idx_scan), human_size(i.size_bytes),
                    bloat, note)  # fmt: skip
    console.print(idx)

    tab = output.table(title="table statistics")
    for col in ("table", "seq scans", "idx scans", "live", "dead", "dead %", "last vacuum",
                "last analyze"):  # fmt: skip
        tab.add_column(col)
    for t in report.tables:
        vacuum = max(filter(None, (t.last_vacuum, t.last_autovacuum)), default="never")
        analyze = max(filter(None, (t.last_analyze, t.last_autoanalyze)), default="never")
        tab.add_row(f"{t.schema}.{t.table}", str(t.seq_scan), str(t.idx_scan),
                    str(t.n_live_tup), str(t.n_dead_tup), f"{t.dead_ratio:.0%}",
                    vacuum[:19], analyze[:19])  # fmt: skip
    console.print(tab)

    if report.recommendations:
        console.print("[bold]recommended maintenance:[/]")
        for rec in report.recommendations:
            console.print(f"  {rec.action};  -- {rec.reason}")
    else:
        console.print("no maintenance due")


@click.command()
@database_url_option(AUDIT_ENV, "auditor")
@format_option("json: the stable schema documented in docs/operations.md.")
def doctor(database_url: str | None, fmt: str) -> None:
    """Health and statistics: connections, locks, top statements, index and table statistics.

    Runs as the auditor login (pg_monitor, pg_read_all_settings; no superuser) and
    masks any statement text that touches the encryption settings.

    Exit 0 report printed, 2 cannot run, 130 interrupted.
    """
    from chatsec.ops.doctor import run_doctor

    report = run_doctor(resolve_url(database_url, AUDIT_ENV))
    if fmt == "json":
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        render_text(report, output.console())


COMMANDS = [doctor]
