"""`chatsec doctor` on the real sandbox: every figure, lock waits, masking, maintenance advice."""

from __future__ import annotations

import io
import json
import threading
import time
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from rich.console import Console

from chatsec.cli.doctor import render_text
from chatsec.cli.main import cli
from chatsec.errors import ChatsecError
from chatsec.keys.rotate import vacuum_messages
from chatsec.ops.doctor import (
    MASK,
    Index,
    Table,
    estimate_btree_bloat,
    mask_query,
    recommend,
    run_doctor,
)
from tests.chat_fixtures import prepare_writer, seed_chat
from tests.conftest import ChatDB

SECRET = "5f" * 32  # key-shaped: 64 hex digits


def _admin(db: ChatDB) -> psycopg.Connection[Any]:
    return psycopg.connect(db.admin.libpq, autocommit=True)


def _text(report: Any) -> str:
    buf = io.StringIO()
    render_text(report, Console(file=buf, width=250))
    return buf.getvalue()


def test_every_figure_is_in_the_json(deployed_db: ChatDB) -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["doctor", "--format", "json", "--database-url", deployed_db.auditor.libpq], env={}
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["format"] == "chatsec-doctor" and doc["version"] == 1
    assert doc["server"]["version_num"] >= 150000
    assert doc["server"]["connected_as"] == "chatsec_auditor"
    conns = doc["connections"]
    assert conns["total"] >= 1 and conns["max_connections"] == 100
    assert "active" in {c["name"] for c in conns["by_state"]}
    assert "chatsec_auditor" in {c["name"] for c in conns["by_role"]}
    assert set(doc["locks"]) == {"held", "waiting"}
    statements = doc["statements"]
    assert statements["available"] is True and statements["top"]
    assert set(statements["top"][0]) >= {"queryid", "calls", "total_ms", "mean_ms", "rows_per_call"}
    indexes = {i["index"]: i for i in doc["indexes"]}
    assert indexes["idx_messages_parent"]["unused"] is True
    assert indexes["messages_pkey"]["unused"] is False  # a primary key is never "unused"
    assert indexes["idx_messages_thread"]["estimated_bloat_ratio"] is not None
    tables = {t["table"]: t for t in doc["tables"]}
    assert set(tables) >= {"users", "threads", "thread_participants", "messages", "attachments"}
    assert set(tables["messages"]) >= {
        "seq_scan", "idx_scan", "n_dead_tup", "dead_ratio", "estimated_bloat_bytes",
        "last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze",
    }  # fmt: skip
    assert isinstance(doc["recommendations"], list)
    # The text report renders the same report.
    assert "top statements by total time" in _text(run_doctor(deployed_db.auditor))


def test_a_lock_wait_shows_the_blocking_session(deployed_db: ChatDB) -> None:
    holder = _admin(deployed_db)
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE chat.users IN ACCESS EXCLUSIVE MODE")
    holder_pid = holder.info.backend_pid
    waiter = _admin(deployed_db)
    waiter_pid = waiter.info.backend_pid
    waiter.execute("SET statement_timeout = '20s'")
    thread = threading.Thread(target=lambda: waiter.execute("SELECT count(*) FROM chat.users"))
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            report = run_doctor(deployed_db.auditor)
            waiting = [lk for lk in report.locks.waiting if lk.pid == waiter_pid]
            if waiting or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert waiting and waiting[0].blocked_by == [holder_pid]
        assert waiting[0].relation == "chat.users" and waiting[0].mode == "AccessShareLock"
        held = [lk for lk in report.locks.held if lk.pid == holder_pid]
        assert [(lk.relation, lk.mode, lk.blocks) for lk in held] == [
            ("chat.users", "AccessExclusiveLock", [waiter_pid])
        ]
        assert "WAITING" in _text(report)
    finally:
        holder.execute("ROLLBACK")
        thread.join(20)
        holder.close()
        waiter.close()


def test_statements_touching_encryption_settings_are_masked(deployed_db: ChatDB) -> None:
    with _admin(deployed_db) as conn:
        # Slow enough to be among the top statements by total time; the identifier and
        # the comment survive pg_stat_statements' normalisation of constants.
        conn.execute('SELECT pg_sleep(0.3) AS "app.encryption_key"')
        conn.execute(f"SELECT /* {SECRET} */ pg_sleep(0.3)")
        conn.execute(f"SET app.encryption_key = '{SECRET}'")
        recorded = conn.execute(
            "SELECT count(*) FROM pg_stat_statements WHERE query LIKE %s OR query LIKE %s",
            ("%app.encryption_key%", f"%{SECRET}%"),
        ).fetchone()
    assert recorded is not None and recorded[0] >= 2  # the test would prove nothing otherwise
    report = run_doctor(deployed_db.auditor)
    out = json.dumps(report.to_json()) + _text(report)
    assert "app.encryption_key" not in out and SECRET not in out
    assert sum(1 for s in report.statements.top if s.query == MASK) >= 2


def test_mask_query() -> None:
    assert mask_query("SELECT pg_catalog.set_config($1, $2, true)") == MASK
    assert mask_query("select pgp_sym_decrypt(x, 'k')") == MASK
    assert mask_query("SHOW app.decryption_keys") == MASK
    assert mask_query("SELECT  id\n FROM chat.messages") == "SELECT id FROM chat.messages"


def test_dead_rows_recommend_vacuum_until_vacuumed(deployed_db: ChatDB) -> None:
    with _admin(deployed_db) as conn:
        # No autovacuum racing the assertions below.
        conn.execute("ALTER TABLE chat.messages SET (autovacuum_enabled = false)")
        chat = seed_chat(conn)
        prepare_writer(conn)
        conn.execute(
            "INSERT INTO chat.messages (thread_id, user_id, content) "
            "SELECT %s, %s, 'm' || g FROM generate_series(1, 200) g",
            (chat.t, chat.alice),
        )
        conn.execute(
            "DELETE FROM chat.messages WHERE content <> '' AND user_id = %s", (chat.alice,)
        )
    # The backend's statistics are flushed when its connection ends.
    before = {t.table: t for t in run_doctor(deployed_db.auditor).tables}["messages"]
    report = run_doctor(deployed_db.auditor)
    assert before.n_dead_tup >= 200 and before.dead_ratio >= 0.9
    assert "VACUUM (ANALYZE) chat.messages" in [r.action for r in report.recommendations]
    vacuum_messages(deployed_db.migrator)  # what `chatsec keys rotate` ends with
    after_report = run_doctor(deployed_db.auditor)
    after = {t.table: t for t in after_report.tables}["messages"]
    assert after.n_dead_tup == 0 and after.last_vacuum is not None
    assert "VACUUM (ANALYZE) chat.messages" not in [r.action for r in after_report.recommendations]


def test_bloated_index_recommends_reindex_concurrently() -> None:
    size = 64 * 1024 * 1024
    ratio = estimate_btree_bloat(size, 10_000, [16, 8])
    assert ratio is not None and ratio > 0.9
    assert estimate_btree_bloat(3 * 8192, 100, [16]) == 0.0  # compact: nothing to gain
    index = Index("chat", "messages", "idx_messages_thread", "btree", 5, 5, 5, size, False,
                  False, False, ratio, int(ratio * size))  # fmt: skip
    actions = [r.action for r in recommend([], [index])]
    assert actions == ["REINDEX INDEX CONCURRENTLY chat.idx_messages_thread"]
    table = Table("chat", "users", 1, 1, 1, 1, 100, 0, 0, 0, 100, 0, 0.0, 100, 8192, 0,
                  None, None, None, None, 0, 0, 0, 0)  # fmt: skip
    assert [r.action for r in recommend([table], [])] == ["ANALYZE chat.users"]


def test_missing_extension_says_how_to_enable_it(empty_db: ChatDB) -> None:
    with _admin(empty_db) as conn:
        conn.execute("DROP EXTENSION pg_stat_statements")
    st = run_doctor(empty_db.auditor).statements
    assert st.available is False and st.top == []
    assert st.reason is not None and "CREATE EXTENSION pg_stat_statements" in st.reason


def test_superuser_is_refused(deployed_db: ChatDB) -> None:
    with pytest.raises(ChatsecError, match="run chatsec doctor as the auditor login"):
        run_doctor(deployed_db.admin)
    result = CliRunner().invoke(cli, ["doctor", "--database-url", deployed_db.admin.libpq], env={})
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("chatsec: error:")
