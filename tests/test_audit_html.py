"""`--format html`: one inert, self-contained page, rendered by a real browser (headless Chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from chatsec.audit.finding import CheckResult, Finding
from chatsec.audit.report import render
from chatsec.audit.runner import AuditReport
from chatsec.sandbox import Sandbox
from tests.allowlist_support import (
    GRANT_FIX,
    GRANT_OBJECT,
    GRANT_TRUNCATE,
    NO_FORCE_RLS,
    RLS_OBJECT,
    broken_database,
    invoke_audit,
)

# A table name the database happily stores; objects-match reports it as an undeclared table.
HOSTILE_TABLE = "<script>alert('pwned')</script>"
HOSTILE_OBJECT = f"chat.{HOSTILE_TABLE}"  # as objects-match names it
RLS_REASON = "owner migration <in progress> & tracked in CHAT-456"
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # root in a container: Chromium's own sandbox cannot start
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@dataclass(frozen=True)
class Rendered:
    page: Path  # the CLI's --format html --output
    summary: dict[str, Any]  # the JSON summary of the same database and allowlist
    results: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def rendered(
    sandbox: Sandbox, head_template: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Rendered]:
    """A failing grant, an accepted (suppressed) RLS flag and a hostile table name."""
    statements = [
        GRANT_TRUNCATE,
        NO_FORCE_RLS,
        "SET ROLE chat_owner",
        f'CREATE TABLE chat."{HOSTILE_TABLE}" (id int)',
        f'ALTER TABLE chat."{HOSTILE_TABLE}" ENABLE ROW LEVEL SECURITY',
        f'ALTER TABLE chat."{HOSTILE_TABLE}" FORCE ROW LEVEL SECURITY',
        "RESET ROLE",
    ]
    directory = tmp_path_factory.mktemp("html")
    allow = directory / "allow.toml"
    allow.write_text(
        f'[[ignore]]\ncheck = "rls-forced"\nobject = "{RLS_OBJECT}"\nreason = "{RLS_REASON}"\n'
    )
    page = directory / "audit.html"
    with broken_database(sandbox, head_template, statements) as db:
        args = (db.auditor.libpq, "--ignore-file", str(allow))
        res = invoke_audit(*args, "--format", "html", "--output", str(page))
        as_json = invoke_audit(*args, "--format", "json")
    assert res.exit_code == 1, res.output
    assert res.stdout == "" and res.stderr.startswith("FAIL "), res.output  # summary on stderr
    doc = json.loads(as_json.stdout)
    yield Rendered(page, doc["summary"], {r["id"]: r for r in doc["results"]})


@pytest.fixture(scope="module")
def html_report(rendered: Rendered) -> Path:
    return rendered.page


class _Elements(HTMLParser):
    """Every start tag with its attributes, and the text inside <td class="object"> cells."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.objects: list[str] = []
        self._in_object = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_object = tag == "td" and dict(attrs).get("class") == "object"

    def handle_endtag(self, tag: str) -> None:
        self._in_object = False

    def handle_data(self, data: str) -> None:
        if self._in_object:
            self.objects.append(data)


def _parse(page: Path) -> _Elements:
    parser = _Elements()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def test_the_page_loads_nothing_from_anywhere(html_report: Path) -> None:
    text = html_report.read_text(encoding="utf-8")
    assert "http://" not in text and "https://" not in text
    assert "@import" not in text and "url(" not in text
    parsed = _parse(html_report)
    tags = {tag for tag, _ in parsed.tags}
    assert not tags & {"script", "link", "img", "iframe", "object", "embed", "base", "video"}
    for tag, attrs in parsed.tags:
        assert "src" not in attrs, tag
        assert (attrs.get("href") or "#").startswith("#"), tag
    csp = [a["content"] for t, a in parsed.tags if a.get("http-equiv") == "Content-Security-Policy"]
    assert csp and (csp[0] or "").startswith("default-src 'none'")


def test_database_text_is_escaped(html_report: Path) -> None:
    text = html_report.read_text(encoding="utf-8")
    assert "<script>alert" not in text and "<in progress>" not in text
    assert "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;" in text
    assert "owner migration &lt;in progress&gt; &amp; tracked" in text
    # What a parser reads back is the name itself, as text.
    assert HOSTILE_OBJECT in _parse(html_report).objects


def test_the_text_report_prints_markup_in_names_as_it_is() -> None:
    # rich would read "[/x]" as a closing tag (and raise); the name must print verbatim.
    name = 'chat."[/x][bold]t<b>"'
    finding = Finding("objects-match", "t", "error", "declared-state", name, "d [red]", "fix")
    result = CheckResult("objects-match", "t", "declared-state", "error", "d", "failed", [finding])
    report = AuditReport("h:5432/db", "[/auditor]", datetime.now(UTC), [result])
    text = render(report, "text", "error")
    assert name in text and "d [red]" in text and "as [/auditor]" in text


@pytest.fixture(scope="module")
def chromium() -> str:
    """Chromium's path, once it has proven it can dump a trivial page here; else skip."""
    path = shutil.which("chromium")
    if path is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    with tempfile.TemporaryDirectory() as directory:
        page = Path(directory) / "probe.html"
        page.write_text("<!DOCTYPE html><p id=probe>rendered</p>")
        try:
            dom = _dump_dom(path, page)
        except subprocess.CalledProcessError as exc:
            last = (exc.stderr or "").strip().splitlines()[-1:] or ["no output"]
            pytest.skip(f"chromium cannot run here: exit {exc.returncode}: {last[0]}")
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"chromium cannot run here: {exc}")
    if '<p id="probe">rendered</p>' not in dom:
        pytest.skip(f"chromium cannot render here: {dom[-300:]!r}")
    return path


def _dump_dom(chromium: str, page: Path) -> str:
    """The DOM after Chromium parsed and laid out `page`, with a profile of its own."""
    with tempfile.TemporaryDirectory(prefix="chatsec-chromium-") as profile:
        done = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.as_uri()],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    return done.stdout


@pytest.fixture(scope="module")
def dom(chromium: str, html_report: Path) -> str:
    """The report's DOM as Chromium built it (once per module: a browser start is ~1 s)."""
    return _dump_dom(chromium, html_report)


def test_chromium_renders_summary_findings_skips_and_suppressions(
    dom: str, rendered: Rendered
) -> None:
    assert rendered.results["app-user-grants"]["status"] == "failed"
    assert rendered.results["rls-forced"]["status"] == "suppressed"
    summary = dom[dom.index('<header id="summary">') : dom.index("</header>")]
    assert "FAIL" in summary and "127.0.0.1" in summary and "chatsec_auditor" in summary
    assert "<dt>worst level</dt><dd>error</dd>" in summary
    # The same counts as the JSON report of the same audit.
    for name in ("checks", "passed", "failed", "skipped", "suppressed"):
        count = rendered.summary[name]
        assert f'<td data-count="{name}">{count}</td>' in summary, name
    assert rendered.summary["suppressed"] >= 1 and rendered.summary["failed"] >= 1
    # The failing finding: object and remediation, in the privileges section.
    privileges = dom[dom.index('id="category-privileges"') :]
    assert f'<td class="object">{GRANT_OBJECT}</td>' in privileges
    assert f'<td class="remediation">{GRANT_FIX}</td>' in privileges
    # Skipped with its reason; suppressed with its reason, not among the failures.
    skipped = dom[dom.index('<section id="skipped">') : dom.index('<section id="suppressed">')]
    assert "md5-passwords" in skipped and "pg_authid" in skipped
    suppressed = dom[dom.index('<section id="suppressed">') :]
    assert f'<td class="object">{RLS_OBJECT}</td>' in suppressed
    assert "owner migration &lt;in progress&gt; &amp; tracked in CHAT-456" in suppressed


def test_chromium_shows_a_hostile_object_name_as_text(dom: str) -> None:
    assert "<script" not in dom.lower()  # no element was created from the name
    assert "<td class=\"object\">chat.&lt;script&gt;alert('pwned')&lt;/script&gt;</td>" in dom
