"""The allowlist: accepted findings are reported as suppressed everywhere and never fail the run."""

from __future__ import annotations

import copy
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from chatsec.audit.allowlist import (
    AllowEntry,
    apply_allowlist,
    build_allowlist,
    known_check_ids,
    load_allowlist_file,
    parse_ignore_option,
)
from chatsec.audit.finding import CheckResult, Finding
from chatsec.audit.report import render
from chatsec.audit.runner import COULD_NOT_RUN_OBJECT, AuditReport
from chatsec.sandbox import Sandbox
from tests.allowlist_support import (
    GRANT_FIX,
    GRANT_OBJECT,
    GRANT_TRUNCATE,
    NO_FORCE_RLS,
    RLS_OBJECT,
    UNREACHABLE,
    broken_database,
    invoke_audit,
)
from tests.audit_support import result, run_audit
from tests.conftest import ChatDB

SARIF_SCHEMA = Path(__file__).parent / "data" / "sarif-schema-2.1.0.json"
GRANT_REASON = "the nightly purge job truncates messages until CHAT-123 lands"
RLS_REASON = "owner-side migration in progress, ticket CHAT-456"


@pytest.fixture(autouse=True)
def _no_stray_allowlist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI reads ./chatsec-audit.toml when present: run in an empty directory.
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def two_breakages(sandbox: Sandbox, head_template: str) -> Iterator[ChatDB]:
    """app-user-grants (TRUNCATE to app_user) and rls-forced (chat.messages) both fire."""
    with broken_database(sandbox, head_template, [GRANT_TRUNCATE, NO_FORCE_RLS]) as db:
        yield db


@pytest.fixture(scope="module")
def one_breakage(sandbox: Sandbox, head_template: str) -> Iterator[ChatDB]:
    """Only app-user-grants fires."""
    with broken_database(sandbox, head_template, [GRANT_TRUNCATE]) as db:
        yield db


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _entry_toml(check: str, reason: str, obj: str | None = None, expires: str = "") -> str:
    lines = ["[[ignore]]", f'check = "{check}"', f'reason = "{reason}"']
    if obj is not None:
        lines.append(f'object = "{obj}"')
    if expires:
        lines.append(f"expires = {expires}")
    return "\n".join(lines) + "\n\n"


def _doc(res: Any) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(res.stdout)  # stdout only: warnings go to stderr
    return doc


def _results(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in doc["results"]}


def _one_line(res: Any) -> str:
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1, res.output
    return lines[0]


# -- parsing: entries, the file, and what is refused -----------------------------------------


def test_ignore_option_splits_at_the_first_colon() -> None:
    known = known_check_ids()
    whole = parse_ignore_option("app-user-grants", known)
    one = parse_ignore_option("probe-plaintext-connection:127.0.0.1:5432", known)
    assert (whole.check_id, whole.object) == ("app-user-grants", None)
    assert (one.check_id, one.object) == ("probe-plaintext-connection", "127.0.0.1:5432")
    assert "--ignore" in one.reason and one.source.startswith("--ignore ")


def test_file_entries_keep_reason_object_and_expiry(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "allow.toml",
        _entry_toml("app-user-grants", GRANT_REASON, GRANT_OBJECT, "2031-01-31")
        + _entry_toml("rls-forced", RLS_REASON, expires='"2030-06-01"'),
    )
    grant, rls = load_allowlist_file(path, known_check_ids())
    assert grant == AllowEntry(
        "app-user-grants", GRANT_OBJECT, GRANT_REASON, f"{path}, entry 1", date(2031, 1, 31)
    )
    assert (rls.object, rls.expires, rls.source) == (None, date(2030, 6, 1), f"{path}, entry 2")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[[ignore]]\ncheck = "app-user-grants"\n', "entry 1: missing 'reason'"),
        ('[[ignore]]\ncheck = "app-user-grants"\nreason = "  "\n', "'reason' must be a non-empty"),
        ('[[ignore]]\nreason = "why"\n', "entry 1: missing 'check'"),
        (
            '[[ignore]]\ncheck = "no-such-check"\nreason = "why"\n',
            "unknown check id 'no-such-check'",
        ),
        (
            '[[ignore]]\ncheck = "rls-forced"\nreason = "why"\nobjct = "chat.messages"\n',
            "unknown key(s) objct",
        ),
        ('[[ignore]]\ncheck = "rls-forced"\nreason = "why"\nexpires = "soon"\n', "'expires' must"),
        (
            '[[ignore]]\ncheck = "rls-forced"\nreason = "why"\nexpires = 2030-01-01T00:00:00\n',
            "'expires' must be a date",
        ),
        ('[[ignore]\ncheck = "rls-forced"\n', "not valid TOML"),
        ('ignore = "rls-forced"\n', "'ignore' must be an array of tables"),
        ('[ignores]\ncheck = "rls-forced"\n', "unknown key(s) ignores"),
    ],
)
def test_a_bad_file_is_one_line_exit_2_before_connecting(
    tmp_path: Path, content: str, message: str
) -> None:
    path = _write(tmp_path / "allow.toml", content)
    res = invoke_audit(UNREACHABLE, "--ignore-file", str(path))
    assert res.exit_code == 2
    line = _one_line(res)
    assert line.startswith("chatsec: error: ") and message in line and str(path) in line


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("no-such-check", "--ignore no-such-check: unknown check id 'no-such-check'"),
        ("app-user-grants:", "empty object"),
        (":chat.messages", "expected CHECK_ID or CHECK_ID:OBJECT"),
    ],
)
def test_a_bad_ignore_option_is_one_line_exit_2(value: str, message: str) -> None:
    res = invoke_audit(UNREACHABLE, "--ignore", value)
    assert res.exit_code == 2
    assert message in _one_line(res)


def test_a_missing_ignore_file_is_one_line_exit_2(tmp_path: Path) -> None:
    res = invoke_audit(UNREACHABLE, "--ignore-file", str(tmp_path / "nope.toml"))
    assert res.exit_code == 2
    assert "cannot read allowlist" in _one_line(res)


def test_the_default_file_in_the_current_directory_is_read(tmp_path: Path) -> None:
    _write(tmp_path / "chatsec-audit.toml", '[[ignore]]\ncheck = "rls-forced"\n')
    res = invoke_audit(UNREACHABLE)
    assert res.exit_code == 2
    assert "chatsec-audit.toml, entry 1: missing 'reason'" in _one_line(res)


# -- matching, precedence, expiry (on a report built by hand) --------------------------------


def _finding(check_id: str, obj: str, level: Any = "error") -> Finding:
    return Finding(check_id, "title", level, "privileges", obj, "detail", "fix")


def _report(*results: CheckResult) -> AuditReport:
    return AuditReport("h:5432/db", "auditor", datetime(2030, 6, 1, 12, tzinfo=UTC), list(results))


def _result(check_id: str, *findings: Finding) -> CheckResult:
    found = list(findings)
    return CheckResult(
        check_id, "title", "privileges", "error", "d", CheckResult.status_for(found), found
    )


def test_object_entries_match_exactly_and_win_over_check_wide_ones() -> None:
    report = _report(
        _result("app-user-grants", _finding("app-user-grants", GRANT_OBJECT)),
        _result("rls-forced", _finding("rls-forced", "chat.messages*")),
    )
    apply_allowlist(
        report,
        [
            AllowEntry("app-user-grants", None, "whole check", "f, entry 1"),
            AllowEntry("app-user-grants", GRANT_OBJECT, "this grant", "f, entry 2"),
            AllowEntry("rls-forced", "chat.messages", "not a glob", "f, entry 3"),
        ],
    )
    grant, rls = report.results
    assert grant.status == "suppressed" and grant.findings[0].suppression is not None
    assert grant.findings[0].suppression.reason == "this grant"
    assert rls.status == "failed" and not rls.findings[0].suppressed
    assert report.exit_code("error") == 1


def test_a_check_that_could_not_run_is_never_suppressed() -> None:
    report = _report(
        _result("rls-forced", _finding("rls-forced", COULD_NOT_RUN_OBJECT)),
    )
    apply_allowlist(report, [AllowEntry("rls-forced", None, "accepted", "f, entry 1")])
    assert report.results[0].status == "failed" and report.exit_code("error") == 1


def test_suppressed_findings_do_not_count_but_info_and_others_still_do() -> None:
    report = _report(
        _result(
            "app-user-grants",
            _finding("app-user-grants", GRANT_OBJECT),
            _finding("app-user-grants", "chat.threads to app_user", "warning"),
        ),
    )
    apply_allowlist(report, [AllowEntry("app-user-grants", GRANT_OBJECT, "r", "f")])
    (r,) = report.results
    assert r.status == "failed" and len(r.findings) == 2  # nothing vanished
    assert (report.findings_at("error"), report.findings_at("warning")) == (0, 1)
    assert report.suppressed_count() == 1
    assert (report.exit_code("error"), report.exit_code("warning")) == (0, 1)
    assert report.worst_level() == "warning"


def test_an_entry_applies_through_its_expiry_day_and_not_after() -> None:
    entry = AllowEntry("rls-forced", None, "r", "f, entry 1", date(2030, 6, 1))
    on_the_day = _report(_result("rls-forced", _finding("rls-forced", RLS_OBJECT)))
    apply_allowlist(on_the_day, [entry], today=date(2030, 6, 1))
    assert on_the_day.results[0].status == "suppressed" and on_the_day.notices == []
    day_after = _report(_result("rls-forced", _finding("rls-forced", RLS_OBJECT)))
    apply_allowlist(day_after, [entry], today=date(2030, 6, 2))
    assert day_after.results[0].status == "failed" and day_after.exit_code("error") == 1
    assert day_after.notices == [
        "allowlist entry rls-forced (f, entry 1) expired on 2030-06-01: its findings count again"
    ]


# -- the CLI against real breakages -----------------------------------------------------------


def test_ignoring_by_check_id_accepts_every_finding_of_that_check(one_breakage: ChatDB) -> None:
    failing = invoke_audit(one_breakage.auditor.libpq, "--format", "json")
    ignored = invoke_audit(
        one_breakage.auditor.libpq, "--format", "json", "--ignore", "app-user-grants"
    )
    assert failing.exit_code == 1 and ignored.exit_code == 0, ignored.output
    doc = _doc(ignored)
    grants = _results(doc)["app-user-grants"]
    assert grants["status"] == "suppressed"
    assert [f["object"] for f in grants["findings"]] == [GRANT_OBJECT]
    assert grants["findings"][0]["suppressed"] is True
    assert "--ignore" in grants["findings"][0]["suppression"]["reason"]
    summary = doc["summary"]
    assert (summary["errors"], summary["suppressed"], summary["suppressed_findings"]) == (0, 1, 1)
    assert summary["checks"] == (
        summary["passed"] + summary["failed"] + summary["skipped"] + summary["suppressed"]
    )


def test_one_ignored_breakage_exits_0_while_another_still_exits_1(two_breakages: ChatDB) -> None:
    grant = f"app-user-grants:{GRANT_OBJECT}"
    one = invoke_audit(two_breakages.auditor.libpq, "--format", "json", "--ignore", grant)
    both = invoke_audit(
        two_breakages.auditor.libpq,
        "--format",
        "json",
        "--ignore",
        grant,
        "--ignore",
        f"rls-forced:{RLS_OBJECT}",
    )
    assert one.exit_code == 1 and both.exit_code == 0, both.output
    by_id = _results(_doc(one))
    assert by_id["app-user-grants"]["status"] == "suppressed"
    assert by_id["rls-forced"]["status"] == "failed"
    assert by_id["rls-forced"]["findings"][0]["suppressed"] is False
    assert _doc(one)["summary"]["exit_code"] == 1 and _doc(both)["summary"]["exit_code"] == 0


def test_an_object_that_does_not_match_exactly_suppresses_nothing(one_breakage: ChatDB) -> None:
    res = invoke_audit(
        one_breakage.auditor.libpq, "--format", "json", "--ignore", "app-user-grants:chat.messages"
    )
    assert res.exit_code == 1
    assert _results(_doc(res))["app-user-grants"]["status"] == "failed"


def test_the_file_with_reasons_accepts_both_and_reports_each_reason(
    two_breakages: ChatDB, tmp_path: Path
) -> None:
    _write(
        tmp_path / "chatsec-audit.toml",  # the default file: no --ignore-file needed
        _entry_toml("app-user-grants", GRANT_REASON, GRANT_OBJECT)
        + _entry_toml("rls-forced", RLS_REASON, expires="2999-12-31"),
    )
    res = invoke_audit(two_breakages.auditor.libpq, "--format", "json")
    assert res.exit_code == 0, res.output
    by_id = _results(_doc(res))
    grant = by_id["app-user-grants"]["findings"][0]["suppression"]
    rls = by_id["rls-forced"]["findings"][0]["suppression"]
    assert grant == {
        "reason": GRANT_REASON,
        "source": "chatsec-audit.toml, entry 1",
        "expires": None,
    }
    assert rls == {
        "reason": RLS_REASON,
        "source": "chatsec-audit.toml, entry 2",
        "expires": "2999-12-31",
    }


def test_an_expired_entry_counts_again_with_a_warning(
    two_breakages: ChatDB, tmp_path: Path
) -> None:
    yesterday = (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    path = _write(
        tmp_path / "accepted.toml",
        _entry_toml("app-user-grants", GRANT_REASON, expires=yesterday)
        + _entry_toml("rls-forced", RLS_REASON),
    )
    res = invoke_audit(two_breakages.auditor.libpq, "--format", "json", "--ignore-file", str(path))
    assert res.exit_code == 1
    warning = f"chatsec: warning: allowlist entry app-user-grants ({path}, entry 1) expired on {yesterday}"
    assert warning in res.stderr
    doc = _doc(res)
    by_id = _results(doc)
    assert by_id["app-user-grants"]["status"] == "failed"
    assert by_id["rls-forced"]["status"] == "suppressed"
    assert any("expired" in n for n in doc["notices"])


# -- every format shows the suppressed finding with its reason --------------------------------


@pytest.fixture(scope="module")
def suppressed_report(
    two_breakages: ChatDB, tmp_path_factory: pytest.TempPathFactory
) -> AuditReport:
    """app-user-grants accepted (with a reason), rls-forced still failing, md5 skipped."""
    path = _write(
        tmp_path_factory.mktemp("allow") / "allow.toml",
        _entry_toml("app-user-grants", GRANT_REASON, GRANT_OBJECT, "2999-01-01"),
    )
    allowlist = build_allowlist([], path)
    return run_audit(two_breakages, allowlist=allowlist)


def test_text_marks_suppressed_findings_with_the_reason(suppressed_report: AuditReport) -> None:
    text = render(suppressed_report, "text", "error")
    rows = [ln for ln in text.splitlines() if "app-user-grants" in ln]
    assert rows and all("suppressed" in ln for ln in rows)
    flat = " ".join(text.replace("│", " ").split())
    assert f"SUPPRESSED: {GRANT_REASON}" in flat
    assert "accepted in " in flat and "entry 1, until 2999-01-01" in flat
    last = text.strip().splitlines()[-1]
    assert last.startswith("FAIL ") and "1 suppressed;" in last
    assert "1 error(s)" in last and "1 suppressed finding(s)" in last


def test_json_flags_each_finding(suppressed_report: AuditReport) -> None:
    doc = json.loads(render(suppressed_report, "json", "error"))
    findings = [f for r in doc["results"] for f in r["findings"]]
    assert all(isinstance(f["suppressed"], bool) for f in findings)
    (accepted,) = [f for f in findings if f["suppressed"]]
    assert accepted["check_id"] == "app-user-grants" and accepted["object"] == GRANT_OBJECT
    assert accepted["suppression"]["reason"] == GRANT_REASON
    assert accepted["suppression"]["expires"] == "2999-01-01"
    assert all(f["suppression"] is None for f in findings if not f["suppressed"])
    assert doc["summary"]["errors"] == 1 and doc["summary"]["exit_code"] == 1


def test_junit_does_not_fail_the_suppressed_check_but_shows_it(
    suppressed_report: AuditReport,
) -> None:
    root = ET.fromstring(render(suppressed_report, "junit", "error"))  # noqa: S314 - ours
    suite = root.find("testsuite")
    assert suite is not None
    cases = {c.get("name"): c for c in suite.findall("testcase")}
    grants = cases["app-user-grants"]
    assert grants.find("failure") is None
    props = {p.get("name"): p.get("value") for p in grants.iter("property")}
    assert props == {"chatsec.status": "suppressed", "chatsec.suppressed_findings": "1"}
    out = grants.findtext("system-out") or ""
    assert f"[suppressed error] {GRANT_OBJECT}" in out and GRANT_REASON in out
    assert GRANT_FIX in out
    assert cases["rls-forced"].find("failure") is not None
    assert suite.get("failures") == "1"


def test_sarif_has_external_suppressions_and_still_validates(
    suppressed_report: AuditReport,
) -> None:
    doc = json.loads(render(suppressed_report, "sarif", "error"))
    jsonschema.validate(doc, json.loads(SARIF_SCHEMA.read_text()), cls=jsonschema.Draft4Validator)
    by_rule = {r["ruleId"]: r for r in doc["runs"][0]["results"]}
    suppression = result(suppressed_report, "app-user-grants").findings[0].suppression
    assert suppression is not None
    assert by_rule["app-user-grants"]["suppressions"] == [
        {
            "kind": "external",
            "status": "accepted",
            "justification": GRANT_REASON,
            "properties": {"source": suppression.source, "expires": "2999-01-01"},
        }
    ]
    assert by_rule["rls-forced"]["suppressions"] == []
    assert by_rule["app-user-grants"]["level"] == "error"  # accepted, not downgraded


def test_accepting_the_remaining_breakage_brings_the_exit_code_to_0(
    suppressed_report: AuditReport,
) -> None:
    assert suppressed_report.exit_code("error") == 1
    report = copy.deepcopy(suppressed_report)  # the module's report stays as it is
    apply_allowlist(report, [AllowEntry("rls-forced", RLS_OBJECT, RLS_REASON, "test")])
    assert report.exit_code("error") == 0 and report.count("suppressed") == 2
    assert report.suppressed_count() == 2 and report.findings_at("error") == 0
