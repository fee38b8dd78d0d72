"""SARIF 2.1.0: a rule per check, a result per finding, the object as a logical location."""

from __future__ import annotations

import json

from chatsec import __version__
from chatsec.audit.finding import CheckResult, Finding
from chatsec.audit.registry import all_checks
from chatsec.audit.runner import AuditReport

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
# SARIF levels: error, warning, note.
_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def _rule(r: CheckResult) -> dict[str, object]:
    return {
        "id": r.check_id,
        "name": "".join(part.capitalize() for part in r.check_id.split("-")),
        "shortDescription": {"text": r.title},
        "fullDescription": {"text": r.description},
        "defaultConfiguration": {"level": _LEVEL[r.level]},
        "properties": {"category": r.category},
    }


def _suppressions(f: Finding) -> list[dict[str, object]]:
    # An empty array says "evaluated, not suppressed" (SARIF 2.1.0 3.27.23); "external":
    # the acceptance lives in the allowlist, not in the audited source.
    if f.suppression is None:
        return []
    properties: dict[str, object] = {"source": f.suppression.source}
    if f.suppression.expires:
        properties["expires"] = f.suppression.expires.isoformat()
    return [
        {
            "kind": "external",
            "status": "accepted",
            "justification": f.suppression.reason,
            "properties": properties,
        }
    ]


def render_sarif(report: AuditReport) -> str:
    """The SARIF 2.1.0 log; suppressed findings are results with `suppressions`."""
    rules = [_rule(r) for r in report.results]
    index = {r.check_id: i for i, r in enumerate(report.results)}
    remediations = {c.id: c.remediation for c in all_checks()}
    results: list[dict[str, object]] = []
    notifications: list[dict[str, object]] = []
    for r in report.results:
        if r.status == "skipped":
            notifications.append(
                {
                    "level": "note",
                    "message": {"text": f"{r.check_id} skipped: {r.skip_reason}"},
                    "associatedRule": {"id": r.check_id, "index": index[r.check_id]},
                }
            )
        for f in r.findings:
            results.append(
                {
                    "ruleId": r.check_id,
                    "ruleIndex": index[r.check_id],
                    "level": _LEVEL[f.level],
                    "message": {"text": f"{f.object}: {f.detail} (fix: {f.remediation})"},
                    "locations": [
                        {
                            "logicalLocations": [
                                {
                                    "name": f.object,
                                    "fullyQualifiedName": f"{report.target}/{f.object}",
                                    "kind": "resource",
                                }
                            ],
                        }
                    ],
                    "suppressions": _suppressions(f),
                    "properties": {
                        "category": f.category,
                        "defaultRemediation": remediations.get(r.check_id, ""),
                    },
                }
            )
    notifications += [{"level": "warning", "message": {"text": n}} for n in report.notices]
    document = {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "chatsec",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "rules": rules,
                    }
                },
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "properties": {"target": report.target},
                "results": results,
            }
        ],
    }
    return json.dumps(document, indent=2) + "\n"
