"""A readable table per category, and one summary line."""

from __future__ import annotations

import io

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chatsec.audit.check import CATEGORIES
from chatsec.audit.finding import Finding, Level
from chatsec.audit.runner import AuditReport

_STATUS_STYLE = {"passed": "green", "failed": "red", "skipped": "yellow", "suppressed": "magenta"}
_LEVEL_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


def summary_line(report: AuditReport, fail_on: Level) -> str:
    verdict = "FAIL" if report.exit_code(fail_on) else "PASS"
    return (
        f"{verdict} {report.target}: {len(report.results)} checks, {report.count('passed')} "
        f"passed, {report.count('failed')} failed, {report.count('skipped')} skipped, "
        f"{report.count('suppressed')} suppressed; "
        f"{report.findings_at('error')} error(s), {report.findings_at('warning')} warning(s), "
        f"{report.findings_at('info')} info, {report.suppressed_count()} suppressed finding(s) "
        f"(fail on {fail_on}; "
        f"{report.duration_s * 1000:.0f} ms)"
    )


def _detail(finding: Finding) -> Text:
    detail = Text(finding.detail)
    detail.append(f"\nfix: {finding.remediation}", style="dim")
    if finding.suppression is not None:
        s = finding.suppression
        until = f", until {s.expires.isoformat()}" if s.expires else ""
        # A marker a reader (and grep) finds: accepted, not fixed.
        detail.append(f"\nSUPPRESSED: {s.reason}", style="magenta")
        detail.append(f"\naccepted in {s.source}{until}", style="dim")
    return detail


# Wide enough that a plain report never wraps a row.
_PLAIN_WIDTH = 100_000


def render_text(
    report: AuditReport,
    fail_on: Level,
    color: bool = False,
    width: int = 120,
    plain: bool = False,
) -> str:
    """Boxed tables `width` wide for people; `plain`: one line per row, columns aligned,
    no box, nothing wrapped (for a pipe: grep and cut see whole names and details)."""
    buf = io.StringIO()
    console = Console(
        file=buf,
        width=_PLAIN_WIDTH if plain else width,
        force_terminal=color,
        no_color=not color,
        highlight=False,
    )
    console.print(Text(f"chatsec audit of {report.target} as {report.user}"))
    extra = sorted({r.category for r in report.results} - set(CATEGORIES))  # e.g. ssl verify's
    for category in (*CATEGORIES, *extra):
        results = [r for r in report.results if r.category == category]
        if not results:
            continue
        if plain:
            table = Table(title=category, title_justify="left", box=None, show_edge=False,
                          pad_edge=False)  # fmt: skip
            for name in ("status", "check", "level", "object", "detail / remediation"):
                table.add_column(name, no_wrap=True)
        else:
            table = Table(title=category, title_justify="left", show_lines=False, expand=True)
            table.add_column("status", no_wrap=True, width=10)
            table.add_column("check", no_wrap=True)
            table.add_column("level", no_wrap=True, width=7)
            table.add_column("object", ratio=2, overflow="fold")
            # fold: a long allowlist path must wrap, not be cut off
            table.add_column("detail / remediation", ratio=4, overflow="fold")
        for r in results:
            status = Text(r.status, style=_STATUS_STYLE[r.status])
            if r.status == "skipped":
                table.add_row(status, r.check_id, "", "", Text(r.skip_reason or "", style="dim"))
            elif not r.findings:
                table.add_row(status, r.check_id, "", "", Text(r.title, style="dim"))
            for f in r.findings:
                # Text(), not str: a "[/x]" in an object name is not rich markup (or a crash).
                table.add_row(
                    status,
                    r.check_id,
                    Text(f.level, style=_LEVEL_STYLE[f.level]),
                    Text(f.object),
                    _detail(f),
                )
        console.print(table)
    for notice in report.notices:
        console.print(Text(f"notice: {notice}", style="yellow"))
    # One line whatever the width: CI logs and `tail -1` read it.
    return buf.getvalue() + summary_line(report, fail_on) + "\n"
