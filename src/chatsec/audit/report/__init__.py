"""Renderers for an audit report: text, json, junit, sarif, html (one module each)."""

from __future__ import annotations

from chatsec.audit.finding import Level
from chatsec.audit.formats import FORMATS
from chatsec.audit.runner import AuditReport

__all__ = ["FORMATS", "render"]


def render(
    report: AuditReport, fmt: str, fail_on: Level, color: bool = False, plain: bool = False
) -> str:
    """`plain` (text only): aligned columns without box or wrapping, for a pipe."""
    if fmt == "text":
        from chatsec.audit.report.text import render_text

        return render_text(report, fail_on, color=color, plain=plain)
    if fmt == "json":
        from chatsec.audit.report.json import render_json

        return render_json(report, fail_on)
    if fmt == "junit":
        from chatsec.audit.report.junit import render_junit

        return render_junit(report)
    if fmt == "sarif":
        from chatsec.audit.report.sarif import render_sarif

        return render_sarif(report)
    if fmt == "html":
        from chatsec.audit.report.html import render_html

        return render_html(report, fail_on)
    raise ValueError(fmt)
