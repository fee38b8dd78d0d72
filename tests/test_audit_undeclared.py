"""What an attacker leaves behind is seen: undeclared triggers, rules and objects, and
functions whose search_path a caller could shadow. `chatsec plan` reports the same."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from chatsec.cli.main import cli
from tests.audit_support import failing, result, run_audit
from tests.conftest import ChatDB

# As the attacker left them: a plaintext copier on chat.messages and a SQL runner for
# app_user in `extensions` (both in a schema chatsec does not compare function by function).
COPIER = [
    "CREATE FUNCTION public.copy_plaintext() RETURNS trigger LANGUAGE plpgsql "
    "SET search_path = pg_catalog, pg_temp AS "
    "$$ BEGIN NEW.metadata := jsonb_build_object('copy', NEW.content); RETURN NEW; END $$",
    "CREATE TRIGGER messages_a_copy BEFORE INSERT OR UPDATE ON chat.messages "
    "FOR EACH ROW EXECUTE FUNCTION public.copy_plaintext()",
]
RUNNER = [
    "CREATE FUNCTION extensions.run_sql(q text) RETURNS void LANGUAGE plpgsql SECURITY DEFINER "
    "SET search_path = pg_catalog, pg_temp AS $$ BEGIN EXECUTE q; END $$",
    "REVOKE EXECUTE ON FUNCTION extensions.run_sql(text) FROM PUBLIC",
    "GRANT EXECUTE ON FUNCTION extensions.run_sql(text) TO app_user",
]


@pytest.mark.parametrize(
    ("check_id", "statements", "named"),
    [
        (
            "function-search-path",
            ["ALTER FUNCTION chat.encrypt_message() RESET search_path"],
            "chat.encrypt_message()",
        ),
        (
            "function-search-path",
            ["ALTER FUNCTION chat.set_updated_at() SET search_path = ''"],
            "chat.set_updated_at()",
        ),
        ("undeclared-objects", COPIER, "messages_a_copy on chat.messages"),
        ("undeclared-objects", COPIER, "function public.copy_plaintext()"),
        ("undeclared-objects", RUNNER, "function extensions.run_sql(text)"),
        (
            "undeclared-objects",
            ["ALTER TABLE chat.users DISABLE TRIGGER users_set_updated_at"],
            "users_set_updated_at on chat.users",
        ),
        (
            "undeclared-objects",
            ["CREATE RULE tell AS ON INSERT TO chat.attachments DO ALSO NOTIFY stolen"],
            "rule tell ON chat.attachments",
        ),
        ("undeclared-objects", ["CREATE SEQUENCE chat.stash"], "sequence chat.stash"),
        ("undeclared-objects", ["CREATE TYPE public.mood AS ENUM ('ok')"], "type public.mood"),
        (
            "undeclared-objects",
            ["CREATE VIEW extensions.peek AS SELECT 1 AS x"],
            "view extensions.peek",
        ),
        (
            "undeclared-objects",
            [
                "CREATE FUNCTION public.on_ddl() RETURNS event_trigger LANGUAGE plpgsql "
                "SET search_path = pg_catalog, pg_temp AS $$ BEGIN END $$",
                "CREATE EVENT TRIGGER watch ON ddl_command_start EXECUTE FUNCTION public.on_ddl()",
            ],
            "event trigger watch",
        ),
    ],
)
def test_each_leftover_fires_exactly_its_check_naming_the_object(
    deployed_db: ChatDB, check_id: str, statements: list[str], named: str
) -> None:
    with deployed_db.sandbox.admin_connect(deployed_db.name) as conn:
        for statement in statements:
            conn.execute(statement)
    report = run_audit(deployed_db)
    assert failing(report) == {check_id}, [
        (f.check_id, f.object, f.detail) for r in report.results for f in r.findings
    ]
    findings = result(report, check_id).findings
    assert named in [f.object for f in findings]
    assert all(f.level == "error" for f in findings)


def test_a_finding_names_the_owner_and_the_definition(deployed_db: ChatDB) -> None:
    with deployed_db.sandbox.admin_connect(deployed_db.name) as conn:
        for statement in RUNNER:
            conn.execute(statement)
    report = run_audit(deployed_db)
    (finding,) = [
        f for f in result(report, "undeclared-objects").findings if "run_sql" in f.object
    ]
    assert "owner chatsec_admin" in finding.detail
    assert "EXECUTE q" in finding.detail
    assert finding.remediation == "DROP FUNCTION extensions.run_sql(text)"


def test_plan_reports_the_same_leftovers_as_drift(deployed_db: ChatDB) -> None:
    with deployed_db.sandbox.admin_connect(deployed_db.name) as conn:
        for statement in COPIER + RUNNER:
            conn.execute(statement)
    result_ = CliRunner().invoke(cli, ["plan", "--database-url", deployed_db.migrator.libpq])
    assert result_.exit_code == 1, result_.output
    for needle in (
        "trigger            messages_a_copy on chat.messages",
        "function public.copy_plaintext()",
        "function extensions.run_sql(text)",
        "DROP TRIGGER messages_a_copy ON chat.messages",
    ):
        assert needle in result_.output


def test_a_clean_deployment_has_nothing_undeclared(deployed_db: Any) -> None:
    report = run_audit(deployed_db, check_ids=["undeclared-objects", "function-search-path"])
    assert {r.check_id: r.status for r in report.results} == {
        "undeclared-objects": "passed",
        "function-search-path": "passed",
    }
