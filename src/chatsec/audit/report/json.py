"""The stable JSON document (schema version 1, documented in docs/audit.md)."""

from __future__ import annotations

import json

from chatsec import __version__
from chatsec.audit.finding import Level
from chatsec.audit.runner import AuditReport

SCHEMA_VERSION = 1


def report_document(report: AuditReport, fail_on: Level) -> dict[str, object]:
    """The document as a dict; errors/warnings/infos count only findings not suppressed."""
    return {
        "version": SCHEMA_VERSION,
        "tool": {"name": "chatsec", "version": __version__},
        "target": report.target,
        "user": report.user,
        "started_at": report.started_at.isoformat(),
        "duration_ms": round(report.duration_s * 1000, 3),
        "fail_on": fail_on,
        "summary": {
            "checks": len(report.results),
            "passed": report.count("passed"),
            "failed": report.count("failed"),
            "skipped": report.count("skipped"),
            "suppressed": report.count("suppressed"),
            "errors": report.findings_at("error"),
            "warnings": report.findings_at("warning"),
            "infos": report.findings_at("info"),
            "suppressed_findings": report.suppressed_count(),
            "exit_code": report.exit_code(fail_on),
        },
        "notices": list(report.notices),
        "results": [r.to_json() for r in report.results],
    }


def render_json(report: AuditReport, fail_on: Level) -> str:
    return json.dumps(report_document(report, fail_on), indent=2) + "\n"
