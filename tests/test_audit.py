"""`chatsec audit` against real databases: a clean deploy passes, each breakage fires its check."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatsec.audit.api import audit
from chatsec.audit.registry import all_checks, select_checks
from chatsec.errors import ChatsecError
from chatsec.paths import policies_dir
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


def _admin(db: Any) -> Any:
    return db.sandbox.admin_connect(db.name)


def _keyring(db: Any, tmp_path: Path) -> Path | None:
    """A registered keyring for the probe's messages when the encryption trigger is deployed."""
    if not encryption_deployed(db):
        return None
    from chatsec.keys.keyring import Keyring
    from chatsec.keys.manage import generate_key

    path = tmp_path / "keyring.json"
    generate_key(Keyring.load_or_empty(path), db.migrator)
    return path


def test_registry_one_module_per_check_with_unique_ids() -> None:
    checks = all_checks()
    assert len({c.id for c in checks}) == len(checks) >= 24
    assert {c.category for c in checks} >= {
        "declared-state",
        "privileges",
        "functions",
        "encryption",
        "server",
        "behaviour",
    }
    with pytest.raises(ChatsecError, match="unknown check id"):
        select_checks(["no-such-check"])


def test_clean_deploy_has_no_error_and_no_avoidable_warning(
    deployed_db: Any, tmp_path: Path
) -> None:
    report = run_audit(deployed_db, probe=True, keyring=_keyring(deployed_db, tmp_path))
    bad = [
        (f.check_id, f.object, f.detail)
        for r in report.results
        for f in r.findings
        if f.level != "info"
    ]
    assert bad == []
    assert failing(report) == set()
    # Reading password hashes needs a superuser: the only thing the auditor cannot verify.
    assert {r.check_id for r in report.results if r.status == "skipped"} == {"md5-passwords"}
    if encryption_deployed(deployed_db):
        assert not result(report, "probe-isolation").findings  # every sub-probe ran
    # The audit's own time, probes included, well under a second.
    assert report.duration_s < 1.0


def test_auditor_without_app_url_skips_isolation_probe_naming_the_option(
    shared_deployed_db: Any,
) -> None:
    report = audit(shared_deployed_db.auditor, check_ids=["probe-isolation"])
    r = result(report, "probe-isolation")
    assert r.status == "skipped" and "--app-url" in (r.skip_reason or "")


@pytest.mark.parametrize(
    ("check_id", "statements"),
    [
        ("rls-enabled", ["ALTER TABLE chat.threads DISABLE ROW LEVEL SECURITY"]),
        ("rls-forced", ["ALTER TABLE chat.messages NO FORCE ROW LEVEL SECURITY"]),
        (
            "policies-match",
            [
                "ALTER POLICY threads_select_participant ON chat.threads "
                "USING (id IN (SELECT chat.my_thread_ids()) OR is_archived)"
            ],
        ),
        ("app-user-grants", ["GRANT TRUNCATE ON chat.messages TO app_user"]),
        ("public-grants", ["GRANT SELECT ON chat.users TO PUBLIC"]),
        (
            "default-privileges",
            ["ALTER DEFAULT PRIVILEGES FOR ROLE chat_owner GRANT SELECT ON TABLES TO app_user"],
        ),
        ("definer-search-path", ["ALTER FUNCTION chat.my_thread_ids() RESET search_path"]),
        ("definer-search-path", ["ALTER FUNCTION chat.my_thread_ids() SET search_path = ''"]),
        ("definer-public-execute", ["GRANT EXECUTE ON FUNCTION chat.my_thread_ids() TO PUBLIC"]),
        ("functions-match", ["ALTER FUNCTION chat.current_user_id() VOLATILE"]),
        (
            "objects-match",
            [
                "SET ROLE chat_owner",
                "CREATE TABLE chat.stray (id int)",
                "ALTER TABLE chat.stray ENABLE ROW LEVEL SECURITY",
                "ALTER TABLE chat.stray FORCE ROW LEVEL SECURITY",
                "RESET ROLE",
            ],
        ),
        ("pgcrypto-installed", ["DROP EXTENSION pgcrypto"]),
        ("key-in-database", ["ALTER DATABASE {db} SET app.encryption_key = '" + "ab" * 32 + "'"]),
        ("logging-leaks-keys", ["ALTER DATABASE {db} SET log_statement = 'all'"]),
        ("password-encryption", ["ALTER DATABASE {db} SET password_encryption = 'md5'"]),
    ],
)
def test_each_breakage_fires_exactly_its_check(
    deployed_db: Any, check_id: str, statements: list[str]
) -> None:
    with _admin(deployed_db) as conn:
        for stmt in statements:
            conn.execute(stmt.replace("{db}", f'"{deployed_db.name}"'))
    report = run_audit(deployed_db)
    assert failing(report) == {check_id}, [
        (f.check_id, f.detail) for r in report.results for f in r.findings if f.level != "info"
    ]
    assert all(f.check_id == check_id for f in result(report, check_id).findings)


@pytest.mark.parametrize(
    ("statement", "declared_by"),
    [
        ("GRANT TEMPORARY ON DATABASE {db} TO app_user", "app-user-grants"),
        ("GRANT CONNECT, TEMPORARY ON DATABASE {db} TO PUBLIC", "public-grants"),
    ],
)
def test_temporary_for_the_application_is_drift_and_a_create_privilege(
    deployed_db: Any, statement: str, declared_by: str
) -> None:
    # Two findings on purpose: the grant is undeclared (drift), and it lets the
    # application create temporary objects (create-privileges names who and how).
    with _admin(deployed_db) as conn:
        conn.execute(statement.replace("{db}", f'"{deployed_db.name}"'))
    report = run_audit(deployed_db)
    assert failing(report) == {declared_by, "create-privileges"}
    assert any(
        "TEMPORARY" in f.detail and f.object in {"app_user", "chatsec_app"}
        for f in result(report, "create-privileges").findings
    )


def test_always_true_write_policy_for_app_user_fires_even_when_declared(
    deployed_db: Any, tmp_path: Path
) -> None:
    # Declared in a copy of policies/, so policies-match agrees and only the lint fires.
    policies = tmp_path / "policies"
    import shutil

    shutil.copytree(policies_dir(), policies)
    with (policies / "tables" / "threads.toml").open("a") as fh:
        fh.write(
            '\n[[policies]]\nname = "threads_update_anything"\ncommand = "UPDATE"\n'
            'roles = ["app_user"]\nusing = "true"\nwith_check = "true"\n'
        )
    with _admin(deployed_db) as conn:
        conn.execute(
            "CREATE POLICY threads_update_anything ON chat.threads FOR UPDATE "
            "TO app_user USING (true) WITH CHECK (true)"
        )
    report = run_audit(deployed_db, policies=policies)
    assert failing(report) == {"permissive-true-write"}
    errors = [f for f in result(report, "permissive-true-write").findings if f.level == "error"]
    assert [f.object for f in errors] == ["threads_update_anything on chat.threads"]


def test_bypassrls_on_app_user_fires_app_user_attributes(deployed_db: Any) -> None:
    # Roles are cluster-wide: always restore, or every later test sees a broken app_user.
    with _admin(deployed_db) as conn:
        conn.execute("ALTER ROLE app_user BYPASSRLS")
        try:
            report = run_audit(deployed_db)
        finally:
            conn.execute("ALTER ROLE app_user NOBYPASSRLS")
    assert failing(report) == {"app-user-attributes"}
    assert "BYPASSRLS" in result(report, "app-user-attributes").findings[0].detail


def test_app_login_in_owner_role_fires_app_user_attributes(deployed_db: Any) -> None:
    with _admin(deployed_db) as conn:
        conn.execute("GRANT chat_owner TO chatsec_app")
        try:
            report = run_audit(deployed_db)
        finally:
            conn.execute("REVOKE chat_owner FROM chatsec_app")
    assert failing(report) == {"app-user-attributes"}


def test_owner_role_drift_fires_roles_match(deployed_db: Any) -> None:
    with _admin(deployed_db) as conn:
        conn.execute("ALTER ROLE chat_owner CREATEDB")
        try:
            report = run_audit(deployed_db)
        finally:
            conn.execute("ALTER ROLE chat_owner NOCREATEDB")
    assert failing(report) == {"roles-match"}


def test_md5_password_hash_is_found_by_a_superuser_and_skipped_for_the_auditor(
    deployed_db: Any,
) -> None:
    role = f"md5_{secrets.token_hex(3)}"
    with _admin(deployed_db) as conn:
        conn.execute("SET password_encryption = 'md5'")
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD 'not-a-real-secret'")
        try:
            as_admin = audit(deployed_db.admin, check_ids=["md5-passwords"])
            as_auditor = audit(deployed_db.auditor, check_ids=["md5-passwords"])
        finally:
            conn.execute(f"DROP ROLE {role}")
    assert [f.object for f in result(as_admin, "md5-passwords").findings] == [role]
    skipped = result(as_auditor, "md5-passwords")
    assert skipped.status == "skipped" and "pg_authid" in (skipped.skip_reason or "")


def test_isolation_probe_catches_rls_turned_off(deployed_db: Any, tmp_path: Path) -> None:
    with _admin(deployed_db) as conn:
        conn.execute("ALTER TABLE chat.threads DISABLE ROW LEVEL SECURITY")
    report = run_audit(
        deployed_db,
        probe=True,
        keyring=_keyring(deployed_db, tmp_path),
        check_ids=["probe-isolation", "rls-enabled"],
    )
    assert failing(report) == {"probe-isolation", "rls-enabled"}
    details = [f.detail for f in result(report, "probe-isolation").findings]
    assert any("cross-thread read" in d for d in details)
    # The probe's transaction was rolled back: no synthetic user is left behind.
    with _admin(deployed_db) as conn:
        row = conn.execute("SELECT count(*) FROM chat.users").fetchone()
    assert row is not None and row[0] == 0


def test_isolation_probe_catches_a_spoofing_policy(deployed_db: Any, tmp_path: Path) -> None:
    with _admin(deployed_db) as conn:
        conn.execute(
            "CREATE POLICY threads_insert_any ON chat.threads FOR INSERT TO app_user "
            "WITH CHECK (true)"
        )
    report = run_audit(
        deployed_db,
        probe=True,
        keyring=_keyring(deployed_db, tmp_path),
        check_ids=["probe-isolation"],
    )
    details = [f.detail for f in result(report, "probe-isolation").findings]
    assert any("spoofed insert" in d for d in details), details


# -- encryption: these need the encryption revision (issue 4) deployed ---------------------


def _needs_encryption(db: Any) -> None:
    if not encryption_deployed(db):
        pytest.skip("chat.encrypt_message() is not deployed (the encryption revision is missing)")


def _trigger_name(conn: Any) -> str:
    row = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'chat.messages'::regclass "
        "AND tgfoid = 'chat.encrypt_message()'::regprocedure"
    ).fetchone()
    return str(row[0])


def test_disabled_encryption_trigger_fires_encryption_trigger(deployed_db: Any) -> None:
    _needs_encryption(deployed_db)
    with _admin(deployed_db) as conn:
        conn.execute(f'ALTER TABLE chat.messages DISABLE TRIGGER "{_trigger_name(conn)}"')
    report = run_audit(deployed_db)
    assert failing(report) == {"encryption-trigger"}


def test_plaintext_written_with_the_trigger_off_fires_plaintext_rows(deployed_db: Any) -> None:
    _needs_encryption(deployed_db)
    with _admin(deployed_db) as conn:
        trigger = _trigger_name(conn)
        # Also lift any constraint that insists on ciphertext, as an operator would have to.
        checks = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'chat.messages'::regclass AND contype = 'c'"
        ).fetchall()
        for name, _ in checks:
            conn.execute(f'ALTER TABLE chat.messages DROP CONSTRAINT "{name}"')
        conn.execute(f'ALTER TABLE chat.messages DISABLE TRIGGER "{trigger}"')
        conn.execute(
            "INSERT INTO chat.users (id, email, username) VALUES "
            "('00000000-0000-0000-0000-000000000001', 'p@x.invalid', 'p')"
        )
        conn.execute(
            "INSERT INTO chat.threads (id, created_by) VALUES "
            "('00000000-0000-0000-0000-000000000002', "
            "'00000000-0000-0000-0000-000000000001')"
        )
        conn.execute(
            "INSERT INTO chat.messages (thread_id, user_id, content) VALUES "
            "('00000000-0000-0000-0000-000000000002', "
            "'00000000-0000-0000-0000-000000000001', 'hello in plaintext')"
        )
        conn.execute(f'ALTER TABLE chat.messages ENABLE TRIGGER "{trigger}"')
        for name, definition in checks:
            suffix = "" if "NOT VALID" in definition else " NOT VALID"
            conn.execute(f'ALTER TABLE chat.messages ADD CONSTRAINT "{name}" {definition}{suffix}')
    report = run_audit(deployed_db)
    assert failing(report) == {"plaintext-rows"}
    assert "1 row(s)" in result(report, "plaintext-rows").findings[0].detail


def test_key_in_a_function_body_fires_key_in_database(deployed_db: Any) -> None:
    with _admin(deployed_db) as conn:
        conn.execute(
            "CREATE FUNCTION public.leak() RETURNS text LANGUAGE sql "
            "SET search_path = '' AS $$ SELECT '" + "cd" * 32 + "'::text $$"
        )
    report = run_audit(deployed_db, check_ids=["key-in-database"])
    assert [f.object for f in result(report, "key-in-database").findings] == ["public.leak()"]


# -- server-wide breakage: a scratch cluster of its own --------------------------------------


@pytest.fixture(scope="module")
def scratch() -> Iterator[Sandbox]:
    yield from scratch_sandbox()


@pytest.fixture(scope="module")
def scratch_db(scratch: Sandbox) -> ChatDB:
    return deployed_chat(scratch)


_LOOSE_HBA = """\
local     all all                scram-sha-256
host      all chatsec_admin 0.0.0.0/0 reject
host      all chatsec_admin ::/0      reject
hostssl   all all 127.0.0.1/32   scram-sha-256
host      all all 127.0.0.1/32   scram-sha-256
hostnossl all all 0.0.0.0/0      reject
hostnossl all all ::/0           reject
"""


def test_hba_accepting_non_tls_fires_hba_rules_then_the_probe(
    scratch: Sandbox, scratch_db: Any
) -> None:
    hba = scratch.data_dir / "pg_hba.conf"
    original = hba.read_bytes()
    try:
        # pg_hba_file_rules reads the file on disk: no reload needed for the SQL view.
        write_server_file(scratch, hba, _LOOSE_HBA.encode())
        report = run_audit(scratch_db, probe=True)
        assert failing(report) == {"hba-rules"}
        finding = result(report, "hba-rules").findings
        assert [f.object for f in finding] == ["pg_hba.conf line 5"]

        # Once loaded, the behavioural probe sees a plaintext connection accepted too.
        from chatsec.tls.plaintext import try_plaintext

        reload(scratch, lambda: try_plaintext(scratch_db.auditor).accepted is True)
        report = run_audit(scratch_db, probe=True, check_ids=["probe-plaintext-connection"])
        assert failing(report) == {"probe-plaintext-connection"}
    finally:
        write_server_file(scratch, hba, original)
        from chatsec.tls.plaintext import try_plaintext

        reload(scratch, lambda: try_plaintext(scratch_db.auditor).accepted is False)


def test_tls_1_2_minimum_is_a_warning(scratch: Sandbox, scratch_db: Any) -> None:
    with scratch.admin_connect() as conn:
        conn.execute("ALTER SYSTEM SET ssl_min_protocol_version = 'TLSv1.2'")
        conn.execute("SELECT pg_reload_conf()")
        try:

            def applied() -> bool:
                with scratch.admin_connect() as c:
                    row = c.execute("SHOW ssl_min_protocol_version").fetchone()
                return row is not None and row[0] == "TLSv1.2"

            reload(scratch, applied)
            report = run_audit(scratch_db, check_ids=["tls-min-version"])
        finally:
            conn.execute("ALTER SYSTEM RESET ssl_min_protocol_version")
            conn.execute("SELECT pg_reload_conf()")
    findings = result(report, "tls-min-version").findings
    assert [f.level for f in findings] == ["warning"]
    assert report.exit_code("error") == 0 and report.exit_code("warning") == 1
