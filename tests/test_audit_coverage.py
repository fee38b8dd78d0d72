"""The audit's coverage checks: each breakage fires its check, naming the object; clean passes.

create-privileges, undeclared-logins, privileged-login-hba, large-objects,
logging-leaks-keys, role-defaults, pgaudit, probe-escalation, and probe-isolation's
skip when a sub-probe cannot run.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from chatsec.audit.check import Skip
from chatsec.audit.checks import pgaudit as pgaudit_check
from chatsec.audit.finding import Level
from chatsec.audit.runner import AuditReport
from chatsec.db.url import DatabaseURL
from chatsec.sandbox import Sandbox
from tests.audit_support import (
    encryption_deployed,
    failing,
    reload,
    result,
    run_audit,
    write_server_file,
)
from tests.conftest import ChatDB, deployed_chat, scratch_sandbox

NEW_CHECKS = (
    "create-privileges",
    "undeclared-logins",
    "privileged-login-hba",
    "large-objects",
    "logging-leaks-keys",
    "role-defaults",
    "pgaudit",
    "probe-escalation",
)


def _admin(db: Any) -> Any:
    return db.sandbox.admin_connect(db.name)


def _as_app(db: Any) -> psycopg.Connection[Any]:
    return psycopg.connect(db.app.libpq, autocommit=True)


def _keyring(db: Any, tmp_path: Path) -> Path | None:
    if not encryption_deployed(db):
        return None
    from chatsec.keys.keyring import Keyring
    from chatsec.keys.manage import generate_key

    path = tmp_path / "keyring.json"
    generate_key(Keyring.load_or_empty(path), db.migrator)
    return path


def _pgaudit_installed(db: Any) -> bool:
    with _admin(db) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_available_extensions WHERE name = 'pgaudit'"
        ).fetchone()
    return bool(row and row[0])


def _bad(report: AuditReport) -> list[tuple[str, str, str]]:
    return [(f.check_id, f.object, f.detail) for r in report.results for f in r.findings
            if f.level != "info"]  # fmt: skip


def _only(report: AuditReport, check_id: str, level: Level = "error") -> list[Any]:
    """Exactly `check_id` fails, at `level` (the exit code follows), and its findings."""
    assert failing(report) == {check_id}, _bad(report)
    findings = [f for f in result(report, check_id).findings if f.level != "info"]
    assert findings and {f.level for f in findings} == {level}, findings
    assert report.exit_code(level) == 1
    if level == "warning":
        assert report.exit_code("error") == 0
    return findings


@pytest.fixture()
def role_name() -> Iterator[str]:
    yield f"cov_{secrets.token_hex(4)}"


def _drop_role(db: Any, role: str, *grants: str) -> None:
    """Roles are cluster-wide: undo the test's grants in its database, then drop the role."""
    with _admin(db) as conn:
        for grant in grants:
            conn.execute(grant)
        conn.execute(f"DROP ROLE IF EXISTS {role}")


# -- a clean deployment -------------------------------------------------------------------


def test_a_clean_deployment_passes_every_coverage_check(deployed_db: Any, tmp_path: Path) -> None:
    report = run_audit(
        deployed_db, probe=True, keyring=_keyring(deployed_db, tmp_path),
        check_ids=[*NEW_CHECKS, "probe-isolation"],
    )  # fmt: skip
    assert _bad(report) == []
    expected_skips = set() if _pgaudit_installed(deployed_db) else {"pgaudit"}
    assert {r.check_id for r in report.results if r.status == "skipped"} == expected_skips
    assert failing(report) == set()


# -- create-privileges --------------------------------------------------------------------


def test_create_on_a_schema_for_app_user_is_an_error_naming_each_app_role(
    deployed_db: Any,
) -> None:
    with _admin(deployed_db) as conn:
        conn.execute("GRANT CREATE ON SCHEMA public TO app_user")
    findings = _only(run_audit(deployed_db), "create-privileges")
    details = {f.object: f.detail for f in findings}
    assert set(details) == {"app_user", "chatsec_app"}
    assert 'create objects in schema "public"' in details["app_user"]
    assert "granted directly" in details["app_user"]
    assert "through membership in app_user" in details["chatsec_app"]


def test_create_for_another_role_is_a_warning(deployed_db: Any, role_name: str) -> None:
    with _admin(deployed_db) as conn:
        conn.execute(f"CREATE ROLE {role_name} NOLOGIN")
        conn.execute(f"GRANT CREATE ON SCHEMA public TO {role_name}")
    try:
        findings = _only(run_audit(deployed_db), "create-privileges", "warning")
    finally:
        _drop_role(deployed_db, role_name, f"REVOKE CREATE ON SCHEMA public FROM {role_name}")
    assert [f.object for f in findings] == [role_name]
    assert "not declared in policies/" in findings[0].detail


def test_temporary_through_the_auditor_role_is_an_error_for_the_app_login(
    deployed_db: Any,
) -> None:
    # chat_auditor's declared TEMPORARY is fine for the auditor, not for an app login.
    with _admin(deployed_db) as conn:
        conn.execute("GRANT chat_auditor TO chatsec_app")
        try:
            report = run_audit(deployed_db, check_ids=["create-privileges"])
        finally:
            conn.execute("REVOKE chat_auditor FROM chatsec_app")
    findings = result(report, "create-privileges").findings
    assert [(f.object, f.level) for f in findings] == [("chatsec_app", "error")]
    assert "TEMPORARY" in findings[0].detail
    assert "through membership in chat_auditor" in findings[0].detail


# -- undeclared-logins --------------------------------------------------------------------


def test_a_login_in_the_key_rotator_role_is_reported(deployed_db: Any, role_name: str) -> None:
    with _admin(deployed_db) as conn:
        conn.execute(f"CREATE ROLE {role_name} LOGIN")
        conn.execute(f"GRANT chat_key_rotator TO {role_name}")
    try:
        findings = _only(run_audit(deployed_db), "undeclared-logins", "warning")
    finally:
        _drop_role(deployed_db, role_name)
    assert [f.object for f in findings] == [role_name]
    assert "chat_key_rotator (directly)" in findings[0].detail


def test_a_login_holding_a_privilege_in_its_own_name_is_reported(
    deployed_db: Any, role_name: str
) -> None:
    with _admin(deployed_db) as conn:
        conn.execute(f"CREATE ROLE {role_name} LOGIN IN ROLE app_user")
        conn.execute(f"GRANT USAGE ON SCHEMA public TO {role_name}")
    try:
        findings = _only(run_audit(deployed_db), "undeclared-logins", "warning")
    finally:
        _drop_role(deployed_db, role_name, f"REVOKE USAGE ON SCHEMA public FROM {role_name}")
    assert [f.object for f in findings] == [role_name]
    assert "USAGE on schema public" in findings[0].detail


# -- privileged-login-hba -----------------------------------------------------------------


def test_a_bypassrls_login_allowed_over_tcp_names_the_hba_line(
    deployed_db: Any, role_name: str
) -> None:
    with _admin(deployed_db) as conn:
        conn.execute(f"CREATE ROLE {role_name} LOGIN BYPASSRLS")
    try:
        findings = _only(run_audit(deployed_db), "privileged-login-hba", "warning")
    finally:
        _drop_role(deployed_db, role_name)
    rules = _hba_lines(deployed_db.sandbox, "hostssl")
    assert [f.object for f in findings] == [f"{role_name} by pg_hba.conf line {n}" for n in rules]
    assert "BYPASSRLS" in findings[0].detail
    assert "hostssl all all 127.0.0.1 255.255.255.255 scram-sha-256" in findings[0].detail


def _hba_lines(box: Sandbox, kind: str) -> list[int]:
    lines = (box.data_dir / "pg_hba.conf").read_text().splitlines()
    return [n for n, line in enumerate(lines, 1) if line.split()[:1] == [kind]]


# -- large-objects ------------------------------------------------------------------------


def test_a_stored_large_object_is_counted_by_owner_never_shown(deployed_db: Any) -> None:
    with _admin(deployed_db) as conn:
        conn.execute("SELECT lo_from_bytea(0, convert_to('very private words', 'UTF8'))")
    findings = _only(run_audit(deployed_db), "large-objects")
    assert [f.object for f in findings] == ["large objects"]
    assert "1 large object(s) stored, owned by chatsec_admin (1)" in findings[0].detail
    assert all("private" not in f.detail for f in findings)


def test_a_large_object_function_for_public_is_an_error(deployed_db: Any) -> None:
    with _admin(deployed_db) as conn:
        conn.execute("GRANT EXECUTE ON FUNCTION pg_catalog.lo_create(oid) TO PUBLIC")
    findings = _only(run_audit(deployed_db), "large-objects")
    assert [f.object for f in findings] == ["large-object functions to PUBLIC"]
    assert "lo_create(oid)" in findings[0].detail
    assert "harden-database" in findings[0].remediation


# -- logging-leaks-keys and role-defaults -------------------------------------------------


@pytest.mark.parametrize(
    ("as_app", "statement", "setting", "where", "level"),
    [
        # What the application login may do to itself: log parameters of failing statements.
        (True, "ALTER ROLE CURRENT_USER IN DATABASE {db} SET "
               "log_parameter_max_length_on_error = -1",
         "log_parameter_max_length_on_error", "role chatsec_app in database {name}", "error"),
        (False, "ALTER ROLE chatsec_migrator IN DATABASE {db} SET log_min_duration_statement = 0",
         "log_min_duration_statement", "role chatsec_migrator in database {name}", "error"),
        (False, "ALTER DATABASE {db} SET debug_print_plan = on",
         "debug_print_plan", "database {name}", "error"),
        (False, "ALTER DATABASE {db} SET pgaudit.log = 'write, ddl, role'",
         "pgaudit.log", "database {name}", "error"),
        # Role defaults apply to the role's own sessions: a NOLOGIN group has none (yet).
        (False, "ALTER ROLE app_user IN DATABASE {db} SET log_statement = 'all'",
         "log_statement", "role app_user in database {name}", "warning"),
    ],
)  # fmt: skip
def test_a_role_or_database_default_that_logs_chat_statements_is_found(
    deployed_db: Any, as_app: bool, statement: str, setting: str, where: str, level: Level
) -> None:
    if setting.startswith("pgaudit.") and not _pgaudit_installed(deployed_db):
        pytest.skip("pgaudit is not installed")
    connect = _as_app if as_app else _admin
    with connect(deployed_db) as conn:
        conn.execute(statement.replace("{db}", f'"{deployed_db.name}"'))
    findings = _only(run_audit(deployed_db), "logging-leaks-keys", level)
    objects = [f.object for f in findings]
    assert objects == [f"setting {setting} ({where.replace('{name}', deployed_db.name)})"]


@pytest.mark.parametrize(
    ("as_app", "statement", "setting"),
    [
        (True, "ALTER ROLE CURRENT_USER IN DATABASE {db} SET work_mem = '1GB'", "work_mem"),
        (False, "ALTER DATABASE {db} SET row_security = off", "row_security"),
    ],
)
def test_a_default_under_the_app_sessions_is_a_role_defaults_warning(
    deployed_db: Any, as_app: bool, statement: str, setting: str
) -> None:
    connect = _as_app if as_app else _admin
    with connect(deployed_db) as conn:
        conn.execute(statement.replace("{db}", f'"{deployed_db.name}"'))
    findings = _only(run_audit(deployed_db), "role-defaults", "warning")
    assert len(findings) == 1 and findings[0].object.startswith(f"setting {setting} (")


# -- pgaudit ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "where"),
    [
        ("ALTER DATABASE {db} SET pgaudit.log = 'ddl'", "database {name}"),
        ("ALTER ROLE chatsec_migrator IN DATABASE {db} SET pgaudit.log = 'none'",
         "role chatsec_migrator in database {name}"),
    ],
)  # fmt: skip
def test_pgaudit_not_logging_ddl_and_role_changes_is_a_warning(
    deployed_db: Any, statement: str, where: str
) -> None:
    if not _pgaudit_installed(deployed_db):
        pytest.skip("pgaudit is not installed")
    with _admin(deployed_db) as conn:
        conn.execute(statement.replace("{db}", f'"{deployed_db.name}"'))
    findings = _only(run_audit(deployed_db), "pgaudit", "warning")
    assert [f.object for f in findings] == [
        f"setting pgaudit.log ({where.replace('{name}', deployed_db.name)})"
    ]


def test_pgaudit_is_skipped_where_it_is_not_installed() -> None:
    class _NoPgaudit:
        def scalar(self, query: str, params: tuple[object, ...] = ()) -> object:
            assert "pg_available_extensions" in query
            return False

    with pytest.raises(Skip, match="pgaudit is not installed on this server"):
        pgaudit_check.CHECK.run(_NoPgaudit())  # type: ignore[arg-type]


# -- probes -------------------------------------------------------------------------------


def test_escalation_probe_creates_a_temporary_table_when_it_may(deployed_db: Any) -> None:
    with _admin(deployed_db) as conn:
        conn.execute(f'GRANT TEMPORARY ON DATABASE "{deployed_db.name}" TO app_user')
    report = run_audit(deployed_db, probe=True, check_ids=["probe-escalation"])
    findings = result(report, "probe-escalation").findings
    assert [(f.object, f.level) for f in findings] == [("temporary objects", "error")]
    assert "chatsec_app ran `CREATE TEMPORARY TABLE" in findings[0].detail


def test_escalation_probe_creates_a_large_object_when_it_may_and_leaves_none(
    deployed_db: Any,
) -> None:
    with _admin(deployed_db) as conn:
        conn.execute("GRANT EXECUTE ON FUNCTION pg_catalog.lo_create(oid) TO PUBLIC")
        report = run_audit(deployed_db, probe=True, check_ids=["probe-escalation"])
        row = conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    assert [f.object for f in result(report, "probe-escalation").findings] == ["large objects"]
    assert row == (0,)  # the probe's transaction was rolled back


def test_escalation_probe_is_skipped_without_the_app_login(shared_deployed_db: Any) -> None:
    from chatsec.audit.api import audit

    report = audit(shared_deployed_db.auditor, check_ids=["probe-escalation"])
    r = result(report, "probe-escalation")
    assert r.status == "skipped" and "--app-url" in (r.skip_reason or "")
    report = run_audit(shared_deployed_db, probe=False, check_ids=["probe-escalation"])
    assert result(report, "probe-escalation").status == "skipped"


def test_isolation_probe_without_a_keyring_is_skipped_not_passed(deployed_db: Any) -> None:
    if not encryption_deployed(deployed_db):
        pytest.skip("every sub-probe runs without a keyring when encryption is not deployed")
    report = run_audit(deployed_db, probe=True, check_ids=["probe-isolation"])
    r = result(report, "probe-isolation")
    assert r.status == "skipped" and r.findings == []
    assert "--keyring" in (r.skip_reason or "") and "found nothing" in (r.skip_reason or "")


def test_isolation_probe_without_a_keyring_still_fails_on_what_it_found(
    deployed_db: Any,
) -> None:
    if not encryption_deployed(deployed_db):
        pytest.skip("every sub-probe runs without a keyring when encryption is not deployed")
    with _admin(deployed_db) as conn:
        conn.execute("ALTER TABLE chat.threads DISABLE ROW LEVEL SECURITY")
    report = run_audit(deployed_db, probe=True, check_ids=["probe-isolation"])
    r = result(report, "probe-isolation")
    assert r.status == "failed"
    assert {f.level for f in r.findings} == {"error", "info"}


# -- server-wide breakage: a scratch cluster of its own -----------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[Sandbox]:
    yield from scratch_sandbox()


@pytest.fixture(scope="module")
def scratch_db(scratch: Sandbox) -> ChatDB:
    return deployed_chat(scratch)


def _setting_is(box: Sandbox, name: str, value: str) -> bool:
    with box.admin_connect() as conn:
        row = conn.execute("SELECT current_setting(%s)", (name,)).fetchone()
    return row is not None and row[0] == value


def test_the_sandbox_logs_connections_users_and_databases(scratch_db: ChatDB) -> None:
    for name, value in (
        ("log_connections", "on"),
        ("log_disconnections", "on"),
        ("log_line_prefix", "%m [%p] %q%u@%d "),
    ):
        assert _setting_is(scratch_db.sandbox, name, value), name


def test_the_sandbox_superuser_connects_through_the_socket_only(scratch: Sandbox) -> None:
    admin = DatabaseURL.parse(scratch.url_for("admin"))
    with scratch.admin_connect() as conn:
        row = conn.execute("SELECT inet_server_addr() IS NULL, current_user").fetchone()
    assert row == (True, "chatsec_admin")
    over_tcp = DatabaseURL(admin.user, admin.password, admin.host, admin.port, admin.database,
                           {k: v for k, v in admin.query.items() if k != "host"})  # fmt: skip
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects connection"):
        psycopg.connect(over_tcp.libpq, connect_timeout=5)


def test_server_forensics_gaps_are_warnings(scratch: Sandbox, scratch_db: ChatDB) -> None:
    with scratch.admin_connect() as conn:
        conn.execute("ALTER SYSTEM SET log_line_prefix = '%m '")
        conn.execute("ALTER SYSTEM SET log_disconnections = off")
        try:
            reload(scratch, lambda: _setting_is(scratch, "log_line_prefix", "%m "))
            report = run_audit(scratch_db)
        finally:
            conn.execute("ALTER SYSTEM RESET log_line_prefix")
            conn.execute("ALTER SYSTEM RESET log_disconnections")
            reload(scratch, lambda: _setting_is(scratch, "log_line_prefix", "%m [%p] %q%u@%d "))
    findings = _only(report, "logging-leaks-keys", "warning")
    assert sorted(f.object for f in findings) == [
        "setting log_disconnections (server)", "setting log_line_prefix (server)"]  # fmt: skip
    assert any("%u and %d" in f.detail for f in findings)


_ADMIN_OVER_TCP = """\
local     all all                scram-sha-256
hostssl   all all 127.0.0.1/32   scram-sha-256
hostssl   all all ::1/128        scram-sha-256
hostnossl all all 0.0.0.0/0      reject
hostnossl all all ::/0           reject
"""


def test_the_superuser_allowed_over_tcp_names_each_hba_line(
    scratch: Sandbox, scratch_db: ChatDB
) -> None:
    hba = scratch.data_dir / "pg_hba.conf"
    original = hba.read_bytes()
    try:
        # pg_hba_file_rules reads the file on disk: no reload needed for the SQL view.
        write_server_file(scratch, hba, _ADMIN_OVER_TCP.encode())
        report = run_audit(scratch_db)
    finally:
        write_server_file(scratch, hba, original)
    findings = _only(report, "privileged-login-hba", "warning")
    assert [f.object for f in findings] == [
        "chatsec_admin by pg_hba.conf line 2", "chatsec_admin by pg_hba.conf line 3"]  # fmt: skip
    assert "(superuser)" in findings[0].detail and "line 2" in findings[0].detail


def test_pgaudit_installed_but_not_loaded_is_a_warning(
    scratch: Sandbox, scratch_db: ChatDB
) -> None:
    if not _pgaudit_installed(scratch_db):
        pytest.skip("pgaudit is not installed")
    with scratch.admin_connect() as conn:
        conn.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
    try:
        scratch.stop()
        scratch.start()  # ALTER SYSTEM (postgresql.auto.conf) outranks chatsec.conf
        report = run_audit(scratch_db)
    finally:
        with scratch.admin_connect() as conn:
            conn.execute("ALTER SYSTEM RESET shared_preload_libraries")
        scratch.stop()
        scratch.start()
    findings = _only(report, "pgaudit", "warning")
    assert [f.object for f in findings] == ["shared_preload_libraries"]
    assert "installed but not loaded" in findings[0].detail
