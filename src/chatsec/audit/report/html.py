"""One self-contained HTML page: inline CSS, no script, no external resource of any kind.

Object names, details and skip reasons come from the audited database: every piece of
text goes through `_e` (html.escape), and a Content-Security-Policy that allows only the
inline style keeps the page inert even if something slipped through.
"""

from __future__ import annotations

from html import escape

from chatsec import __version__
from chatsec.audit.check import CATEGORIES
from chatsec.audit.finding import CheckResult, Finding, Level
from chatsec.audit.runner import AuditReport

_CSP = "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'"

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 75rem;
       padding: 1rem 1.5rem; color: #1b1f24; background: #fff; }
h1 { font-size: 1.5rem; margin: 0 0 .5rem; }
h2 { font-size: 1.2rem; margin: 2rem 0 .5rem; border-bottom: 1px solid #d0d7de; }
h3 { font-size: 1rem; margin: 1.25rem 0 .4rem; }
table { border-collapse: collapse; width: 100%; margin-bottom: .5rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .5rem; text-align: left;
         vertical-align: top; }
th { background: #f6f8fa; }
td.status, td.check, td.level { white-space: nowrap; }
td.object { min-width: 10rem; }
td.object, td.remediation, code { font-family: ui-monospace, monospace; font-size: 13px;
         overflow-wrap: anywhere; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: .2rem 1rem; }
dl.meta dt { font-weight: 600; }
dl.meta dd { margin: 0; }
table.counts { width: auto; }
table.counts td { text-align: right; min-width: 5rem; }
.verdict { padding: .1rem .6rem; border-radius: .3rem; color: #fff; }
.verdict-pass { background: #1a7f37; }
.verdict-fail { background: #cf222e; }
.status-passed { color: #1a7f37; } .status-failed { color: #cf222e; font-weight: 600; }
.status-skipped { color: #9a6700; } .status-suppressed { color: #8250df; }
.level-error { color: #cf222e; font-weight: 600; } .level-warning { color: #9a6700; }
.level-info { color: #0969da; }
.notice { background: #fff8c5; border: 1px solid #d4a72c; padding: .4rem .6rem; }
.muted { color: #57606a; }
@media print { h2 { break-after: avoid; } tr { break-inside: avoid; } }
"""


def _e(text: object) -> str:
    """Escaped for element text and quoted attribute values."""
    return escape(str(text), quote=True)


def _cell(text: object, cls: str) -> str:
    return f'<td class="{cls}">{_e(text)}</td>'


def _summary(report: AuditReport, fail_on: Level) -> str:
    verdict = "FAIL" if report.exit_code(fail_on) else "PASS"
    worst = report.worst_level() or "none"
    meta = [
        ("target", report.target),
        ("user", report.user),
        ("started", report.started_at.isoformat(timespec="seconds")),
        ("duration", f"{report.duration_s * 1000:.0f} ms"),
        ("fail on", fail_on),
        ("worst level", worst),
    ]
    rows = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in meta)
    counts = [
        ("checks", len(report.results)),
        ("passed", report.count("passed")),
        ("failed", report.count("failed")),
        ("skipped", report.count("skipped")),
        ("suppressed", report.count("suppressed")),
        ("errors", report.findings_at("error")),
        ("warnings", report.findings_at("warning")),
        ("infos", report.findings_at("info")),
        ("suppressed findings", report.suppressed_count()),
    ]
    head = "".join(f"<th>{_e(name)}</th>" for name, _ in counts)
    values = "".join(f'<td data-count="{_e(name)}">{n}</td>' for name, n in counts)
    return (
        '<header id="summary">'
        f'<h1>chatsec audit <span class="verdict verdict-{verdict.lower()}">{verdict}</span></h1>'
        f'<dl class="meta">{rows}</dl>'
        f'<table class="counts"><tr>{head}</tr><tr>{values}</tr></table>'
        "</header>"
    )


def _notices(report: AuditReport) -> str:
    if not report.notices:
        return ""
    items = "".join(f'<p class="notice">{_e(n)}</p>' for n in report.notices)
    return f'<section id="notices"><h2>Notices</h2>{items}</section>'


def _finding_row(r: CheckResult, f: Finding) -> str:
    return (
        "<tr>"
        + _cell(r.status, f"status status-{r.status}")
        + _cell(r.check_id, "check")
        + _cell(f.level, f"level level-{f.level}")
        + _cell(f.object, "object")
        + _cell(f.detail, "detail")
        + _cell(f.remediation, "remediation")
        + "</tr>"
    )


def _check_row(r: CheckResult) -> str:
    if r.status == "skipped":
        note = f"skipped: {r.skip_reason or ''}"
    elif r.suppressed_findings():
        note = f"{r.title} ({len(r.suppressed_findings())} suppressed finding(s), see below)"
    else:
        note = r.title
    return (
        "<tr>"
        + _cell(r.status, f"status status-{r.status}")
        + _cell(r.check_id, "check")
        + '<td colspan="4" class="muted">'
        + _e(note)
        + "</td></tr>"
    )


def _category(category: str, results: list[CheckResult]) -> str:
    rows: list[str] = []
    for r in results:
        active = r.active_findings()
        rows += [_finding_row(r, f) for f in active]
        if not active or r.suppressed_findings():
            rows.append(_check_row(r))
    head = "".join(
        f"<th>{h}</th>" for h in ("status", "check", "level", "object", "detail", "remediation")
    )
    return (
        f'<section class="category" id="category-{_e(category)}"><h3>{_e(category)}</h3>'
        f"<table><tr>{head}</tr>{''.join(rows)}</table></section>"
    )


def _findings(report: AuditReport) -> str:
    extra = sorted({r.category for r in report.results} - set(CATEGORIES))
    sections = [
        _category(c, [r for r in report.results if r.category == c])
        for c in (*CATEGORIES, *extra)
        if any(r.category == c for r in report.results)
    ]
    return f'<section id="findings"><h2>Checks and findings</h2>{"".join(sections)}</section>'


def _skipped(report: AuditReport) -> str:
    skipped = [r for r in report.results if r.status == "skipped"]
    if not skipped:
        return '<section id="skipped"><h2>Skipped checks</h2><p>None.</p></section>'
    rows = "".join(
        f"<tr>{_cell(r.check_id, 'check')}{_cell(r.category, 'category')}"
        f"{_cell(r.skip_reason or '', 'reason')}</tr>"
        for r in skipped
    )
    return (
        '<section id="skipped"><h2>Skipped checks</h2>'
        f"<table><tr><th>check</th><th>category</th><th>reason</th></tr>{rows}</table>"
        "</section>"
    )


def _suppressed_row(f: Finding) -> str:
    assert f.suppression is not None
    s = f.suppression
    return (
        "<tr>"
        + _cell(f.check_id, "check")
        + _cell(f.level, f"level level-{f.level}")
        + _cell(f.object, "object")
        + _cell(f.detail, "detail")
        + _cell(f.remediation, "remediation")
        + _cell(s.reason, "reason")
        + _cell(s.source, "source")
        + _cell(s.expires.isoformat() if s.expires else "never", "expires")
        + "</tr>"
    )


def _suppressed(report: AuditReport) -> str:
    found = [f for r in report.results for f in r.suppressed_findings()]
    if not found:
        return '<section id="suppressed"><h2>Suppressed findings</h2><p>None.</p></section>'
    head = "".join(
        f"<th>{h}</th>"
        for h in (
            "check",
            "level",
            "object",
            "detail",
            "remediation",
            "reason",
            "source",
            "expires",
        )
    )
    return (
        '<section id="suppressed"><h2>Suppressed findings</h2>'
        '<p class="muted">Accepted by the allowlist: listed, not counted towards the exit '
        "code.</p>"
        f"<table><tr>{head}</tr>{''.join(_suppressed_row(f) for f in found)}</table></section>"
    )


def render_html(report: AuditReport, fail_on: Level) -> str:
    """The whole report as one HTML document that needs nothing but itself."""
    body = "".join(
        (
            _summary(report, fail_on),
            _notices(report),
            _findings(report),
            _skipped(report),
            _suppressed(report),
            f'<footer class="muted"><p>chatsec {_e(__version__)}</p></footer>',
        )
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>chatsec audit of {_e(report.target)}</title>"
        f"<style>{_STYLE}</style></head>\n"
        f"<body>{body}</body></html>\n"
    )
