"""policies/ as the declared source: plan is empty after deploy, drift shows, revisions are exact."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from chatsec.cli.main import cli
from chatsec.db.connect import connect
from chatsec.errors import ChatsecError
from chatsec.paths import policies_dir
from chatsec.policy.compare import Change, diff_live
from chatsec.policy.load import load_policies
from chatsec.policy.revision import ordered_statements, render_revision
from tests.conftest import ChatDB


def _plan(db: ChatDB, policies: Path | None = None) -> list[Change]:
    with connect(db.migrator) as conn:
        return diff_live(conn, load_policies(policies))


def test_plan_is_empty_after_deploy(deployed_db: ChatDB) -> None:
    assert _plan(deployed_db) == []
    result = CliRunner().invoke(cli, ["plan", "--database-url", deployed_db.migrator.libpq])
    assert result.exit_code == 0, result.output
    assert "in sync" in result.output


def test_plan_runs_as_the_auditor_too(deployed_db: ChatDB) -> None:
    with connect(deployed_db.auditor) as conn:
        assert diff_live(conn, load_policies()) == []


@pytest.mark.parametrize(
    ("sabotage", "kind", "action", "needle"),
    [
        (
            "CREATE POLICY sneaky ON chat.messages FOR SELECT TO app_user USING (true)",
            "policy",
            "extra",
            "sneaky",
        ),
        ("GRANT TRUNCATE ON chat.messages TO app_user", "table-grant", "extra", "TRUNCATE"),
        ("GRANT SELECT ON chat.users TO PUBLIC", "table-grant", "extra", "PUBLIC"),
        ("ALTER TABLE chat.messages DISABLE ROW LEVEL SECURITY", "rls", "changed", "disabled"),
        ("ALTER TABLE chat.threads NO FORCE ROW LEVEL SECURITY", "rls", "changed", "not forced"),
        (
            "ALTER POLICY messages_select_participant ON chat.messages USING (true)",
            "policy",
            "changed",
            "USING true",
        ),
        (
            "GRANT EXECUTE ON FUNCTION chat.my_thread_ids() TO PUBLIC",
            "function-grant",
            "extra",
            "PUBLIC",
        ),
        (
            "ALTER FUNCTION chat.my_thread_ids() RESET search_path",
            "function",
            "changed",
            "search_path",
        ),
        (
            "ALTER FUNCTION chat.my_thread_ids() SET search_path = ''",
            "function",
            "changed",
            "search_path '', declared 'pg_catalog, pg_temp'",
        ),
        (
            "ALTER FUNCTION chat.my_thread_ids() OWNER TO chat_owner",
            "function",
            "changed",
            "owner chat_owner, declared chat_definer",
        ),
        (
            "ALTER VIEW chat.user_profiles OWNER TO chat_owner",
            "table",
            "changed",
            "owner chat_owner, declared chat_definer",
        ),
        ("GRANT TEMPORARY ON DATABASE {db} TO app_user", "database-grant", "extra", "TEMPORARY"),
        (
            "GRANT TEMPORARY ON DATABASE {db} TO chatsec_app",
            "database-grant",
            "extra",
            "chatsec_app",
        ),
        ("GRANT CONNECT ON DATABASE {db} TO PUBLIC", "database-grant", "extra", "PUBLIC"),
        ("GRANT UPDATE (user_id) ON chat.messages TO app_user", "table-grant", "extra", "user_id"),
        ("DROP POLICY users_update_self ON chat.users", "policy", "missing", "users_update_self"),
        ("GRANT CREATE ON SCHEMA chat TO app_user", "schema-grant", "extra", "CREATE"),
        ("ALTER FUNCTION chat.my_thread_ids() ROWS 1000", "function", "changed", "ROWS 1000"),
    ],
)
def test_drift_made_by_hand_shows_in_the_plan(
    deployed_db: ChatDB, sabotage: str, kind: str, action: str, needle: str
) -> None:
    with connect(deployed_db.admin, autocommit=True) as conn:
        conn.execute(sabotage.replace("{db}", f'"{deployed_db.name}"'))
    changes = _plan(deployed_db)
    assert len(changes) == 1, changes
    change = changes[0]
    assert (change.kind, change.action) == (kind, action)
    assert needle in change.object + change.detail
    # The plan's SQL, run as a revision would run it, repairs exactly that drift.
    with connect(deployed_db.migrator) as conn:
        for stmt in ordered_statements(changes):
            conn.execute(stmt.encode())
        conn.commit()
    assert _plan(deployed_db) == []


def test_a_login_may_connect_without_being_declared(deployed_db: ChatDB) -> None:
    # Logins are per environment: CONNECT granted to one is theirs to decide.
    with connect(deployed_db.admin, autocommit=True) as conn:
        conn.execute(f'GRANT CONNECT ON DATABASE "{deployed_db.name}" TO chatsec_app')
    assert _plan(deployed_db) == []


def test_plan_cli_exit_code_on_drift(deployed_db: ChatDB) -> None:
    with connect(deployed_db.admin, autocommit=True) as conn:
        conn.execute("ALTER TABLE chat.users DISABLE ROW LEVEL SECURITY")
    result = CliRunner().invoke(cli, ["plan", "--database-url", deployed_db.migrator.libpq])
    assert result.exit_code == 1
    assert "chat.users" in result.output and "ENABLE ROW LEVEL SECURITY" in result.output


def test_formatting_is_not_a_difference(deployed_db: ChatDB, tmp_path: Path) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(policies_dir(), copy)
    path = copy / "tables" / "messages.toml"
    text = path.read_text()
    text = text.replace(
        'using = "thread_id IN (SELECT chat.my_thread_ids())"',
        'using = """\n  (thread_id IN (\n     select   chat.my_thread_ids()))\n"""',
        1,
    )
    path.write_text(text)
    assert _plan(deployed_db, copy) == []


def test_revision_holds_the_exact_sql_delta(deployed_db: ChatDB, tmp_path: Path) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(policies_dir(), copy)
    with (copy / "tables" / "threads.toml").open("a") as f:
        f.write(
            '\n[[policies]]\nname = "threads_delete_owner"\ncommand = "DELETE"\n'
            'roles = ["app_user"]\nusing = "id IN (SELECT chat.my_admin_thread_ids())"\n'
        )
        f.write('\n[grants.chat_auditor]\ntable = ["SELECT"]\n')
    declared = load_policies(copy)
    changes = _plan(deployed_db, copy)
    assert {(c.kind, c.action) for c in changes} == {
        ("policy", "missing"),
        ("table-grant", "missing"),
    }
    text = render_revision("0099", "0002", "add delete", changes, declared)
    assert "CREATE POLICY threads_delete_owner ON chat.threads" in text
    assert "DROP POLICY threads_delete_owner ON chat.threads" in text
    assert "GRANT SELECT ON TABLE chat.threads TO chat_auditor" in text
    assert "policies" not in text.split('"""', 2)[2].replace("policies/", "")  # no file references
    compile(text, "0099.py", "exec")


def test_malformed_policy_file_is_one_clear_error(tmp_path: Path) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(policies_dir(), copy)
    (copy / "tables" / "users.toml").write_text("table = 'chat.users'\n[[policies]]\nname = \n")
    with pytest.raises(ChatsecError, match="malformed policy file"):
        load_policies(copy)
    (copy / "tables" / "users.toml").write_text(
        "table = 'chat.users'\n[[policies]]\nname = 'x'\ncommand = 'SELEKT'\nusing = 'true'\n"
    )
    with pytest.raises(ChatsecError, match="command must be one of"):
        load_policies(copy)
    result = CliRunner().invoke(
        cli,
        [
            "plan",
            "--policies",
            str(copy),
            "--database-url",
            "postgresql://x@127.0.0.1:1/x?sslmode=verify-full",
        ],
    )
    assert result.exit_code == 2 and "command must be one of" in result.output


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        ("rows = 50", "rows = 0", "rows must be a positive integer, not 0"),
        ("rows = 50", 'rows = "50"', "rows must be a positive integer, not '50'"),
        ('returns = "uuid"', 'returns = "uuid"\nrows = 5', "rows applies only to a set-returning"),
    ],
)
def test_a_bad_row_estimate_is_refused(tmp_path: Path, old: str, new: str, error: str) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(policies_dir(), copy)
    functions = copy / "functions.toml"
    text = functions.read_text()
    assert old in text
    functions.write_text(text.replace(old, new, 1))
    with pytest.raises(ChatsecError, match=error):
        load_policies(copy)


@pytest.mark.parametrize(
    "path",
    ["", "pg_temp, pg_catalog", "pg_catalog", "pg_catalog, public, pg_temp", '"$user", pg_temp'],
)
def test_a_function_search_path_a_caller_could_shadow_is_refused(tmp_path: Path, path: str) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(policies_dir(), copy)
    functions = copy / "functions.toml"
    text = functions.read_text()
    functions.write_text(
        text.replace('search_path = "pg_catalog, pg_temp"', f"search_path = '{path}'", 1)
    )
    with pytest.raises(
        ChatsecError, match="functions.set_updated_at: search_path .* name pg_temp, last"
    ):
        load_policies(copy)


def test_policy_that_does_not_compile_is_reported(deployed_db: ChatDB, tmp_path: Path) -> None:
    copy = tmp_path / "policies"
    shutil.copytree(policies_dir(), copy)
    path = copy / "tables" / "messages.toml"
    path.write_text(path.read_text().replace("chat.my_thread_ids()", "chat.no_such_fn()"))
    with pytest.raises(ChatsecError, match="does not compile"):
        _plan(deployed_db, copy)


def test_revision_command_end_to_end(sandbox: object, deployed_db: ChatDB, tmp_path: Path) -> None:
    versions = tmp_path / "versions"
    versions.mkdir()
    env = {
        "CHATSEC_DATABASE_URL": deployed_db.migrator.libpq,
        "CHATSEC_ADMIN_DATABASE_URL": deployed_db.admin.libpq,
    }
    args = ["revision", "-m", "nothing new", "--versions", str(versions)]
    result = CliRunner().invoke(cli, args, env=env)
    assert result.exit_code == 0, result.output
    assert "no revision written" in result.output and not list(versions.iterdir())
    copy = tmp_path / "policies"
    shutil.copytree(policies_dir(), copy)
    path = copy / "tables" / "attachments.toml"
    path.write_text(path.read_text().replace('table = ["SELECT", "DELETE"]', 'table = ["SELECT"]'))
    result = CliRunner().invoke(cli, [*args, "--policies", str(copy)], env=env)
    assert result.exit_code == 0, result.output
    (written,) = versions.iterdir()
    text = written.read_text()
    assert "REVOKE DELETE ON TABLE chat.attachments FROM app_user" in text
    assert "GRANT DELETE ON TABLE chat.attachments TO app_user" in text


def test_every_column_a_policy_filters_on_leads_an_index(deployed_db: ChatDB) -> None:
    """USING clauses filter rows on every read: each table column they name must be indexable."""
    with connect(deployed_db.admin) as conn:
        rows = conn.execute(
            """
            SELECT c.relname, p.polname, pg_get_expr(p.polqual, p.polrelid),
                   ARRAY(SELECT attname::text FROM pg_attribute
                          WHERE attrelid = c.oid AND attnum > 0 AND NOT attisdropped),
                   ARRAY(SELECT a.attname::text FROM pg_index i
                           JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
                          WHERE i.indrelid = c.oid)
              FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'chat' AND p.polqual IS NOT NULL
            """
        ).fetchall()
    assert rows
    # A participant's role (three values) only ever narrows the rows of the threads an
    # indexed column already selected: it needs no index, as long as that column is there.
    narrowing = {("thread_participants", "role"): "thread_id"}
    unindexed = []
    for table, policy, qual, columns, leading in rows:
        if str(qual) == "true":
            continue

        def named(column: str, qual: str = str(qual), table: str = str(table)) -> bool:
            # The table's own column, bare or qualified by the table name (m.id is another table's).
            return re.search(rf"(?<![\w.]){column}\b|\b{table}\.{column}\b", qual) is not None

        for column in columns:
            if not named(column) or column in leading:
                continue
            companion = narrowing.get((table, column))
            if companion is None or not named(companion):
                unindexed.append(f"{table}.{column} ({policy})")
    assert not unindexed, unindexed


def test_policy_functions_run_once_per_statement(deployed_db: ChatDB) -> None:
    """Every function a policy calls sits in a sub-SELECT (an InitPlan or hashed SubPlan)."""
    with connect(deployed_db.admin) as conn:
        conn.execute("SET search_path = pg_catalog")
        rows = conn.execute(
            """
            SELECT c.relname, p.polname, e.expr
              FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
              JOIN pg_namespace n ON n.oid = c.relnamespace,
                   LATERAL (VALUES (pg_get_expr(p.polqual, p.polrelid)),
                                   (pg_get_expr(p.polwithcheck, p.polrelid))) e(expr)
             WHERE n.nspname = 'chat' AND e.expr IS NOT NULL
            """
        ).fetchall()
    calls = 0
    per_row = []
    for table, policy, expr in rows:
        for match in re.finditer(r"chat\.\w+\(", str(expr)):
            calls += 1
            before = str(expr)[: match.start()].rstrip()
            if not (before.endswith("SELECT") or before.endswith("FROM")):
                per_row.append(f"{policy} on {table}: {expr}")
    assert calls > 10
    assert not per_row, per_row
