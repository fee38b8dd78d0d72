"""JUnit XML: one testcase per check; failures for error/warning findings, skips with reasons."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - we only write XML

from chatsec.audit.finding import CheckResult, Finding
from chatsec.audit.runner import AuditReport


def _suppressed_line(f: Finding) -> str:
    assert f.suppression is not None
    until = f", until {f.suppression.expires.isoformat()}" if f.suppression.expires else ""
    return (
        f"[suppressed {f.level}] {f.object}: {f.detail}\n"
        f"  reason: {f.suppression.reason} ({f.suppression.source}{until})\n"
        f"  fix: {f.remediation}"
    )


def _mark_suppressed(case: ET.Element, r: CheckResult) -> None:
    # Properties come first in a testcase (JUnit XSD order); readers show them per test.
    props = ET.SubElement(case, "properties")
    if r.status == "suppressed":
        ET.SubElement(props, "property", name="chatsec.status", value="suppressed")
    ET.SubElement(
        props,
        "property",
        name="chatsec.suppressed_findings",
        value=str(len(r.suppressed_findings())),
    )


def render_junit(report: AuditReport) -> str:
    """One testcase per check; suppressed findings are not failures but stay in system-out."""
    suites = ET.Element("testsuites", name="chatsec audit")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=f"chatsec audit {report.target}",
        tests=str(len(report.results)),
        failures=str(report.count("failed")),
        errors="0",
        skipped=str(report.count("skipped")),
        time=f"{report.duration_s:.3f}",
        timestamp=report.started_at.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    for r in report.results:
        case = ET.SubElement(
            suite,
            "testcase",
            classname=f"chatsec.audit.{r.category}",
            name=r.check_id,
            time=f"{r.duration_s:.3f}",
        )
        if r.suppressed_findings():
            _mark_suppressed(case, r)
        if r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.skip_reason or "skipped")
            continue
        failing = [f for f in r.active_findings() if f.level != "info"]
        if failing:
            worst = "error" if any(f.level == "error" for f in failing) else "warning"
            failure = ET.SubElement(
                case,
                "failure",
                type=worst,
                message=f"{len(failing)} finding(s): {failing[0].object}: {failing[0].detail}",
            )
            failure.text = "\n".join(
                f"[{f.level}] {f.object}: {f.detail}\n  fix: {f.remediation}" for f in failing
            )
        lines = [f"[info] {f.object}: {f.detail}" for f in r.active_findings() if f.level == "info"]
        lines += [_suppressed_line(f) for f in r.suppressed_findings()]
        if lines:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(lines)
    if report.notices:
        err = ET.SubElement(suite, "system-err")
        err.text = "\n".join(f"notice: {n}" for n in report.notices)
    ET.indent(suites)
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
    )
