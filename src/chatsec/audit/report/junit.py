"""JUnit XML: one testcase per check; failures for error/warning findings, skips with reasons."""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - we only write XML

from chatsec.audit.runner import AuditReport


def render_junit(report: AuditReport) -> str:
    suites = ET.Element("testsuites", name="chatsec audit")
    suite = ET.SubElement(
        suites, "testsuite",
        name=f"chatsec audit {report.target}",
        tests=str(len(report.results)),
        failures=str(report.count("failed")),
        errors="0",
        skipped=str(report.count("skipped")),
        time=f"{report.duration_s:.3f}",
        timestamp=report.started_at.strftime("%Y-%m-%dT%H:%M:%S"),
    )
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=f"chatsec.audit.{r.category}",
                             name=r.check_id, time=f"{r.duration_s:.3f}")
        if r.status == "skipped":
            ET.SubElement(case, "skipped", message=r.skip_reason or "skipped")
            continue
        failing = [f for f in r.findings if f.level != "info"]
        if failing:
            worst = "error" if any(f.level == "error" for f in failing) else "warning"
            failure = ET.SubElement(
                case, "failure", type=worst,
                message=f"{len(failing)} finding(s): {failing[0].object}: {failing[0].detail}",
            )
            failure.text = "\n".join(
                f"[{f.level}] {f.object}: {f.detail}\n  fix: {f.remediation}" for f in failing
            )
        infos = [f for f in r.findings if f.level == "info"]
        if infos:
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(f"[info] {f.object}: {f.detail}" for f in infos)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"
