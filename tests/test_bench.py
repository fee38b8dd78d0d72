"""A small-scale smoke of `chatsec bench`: it completes and reports every figure (no thresholds)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from chatsec.cli.main import cli
from chatsec.sandbox import Sandbox


def test_bench_small_scale_reports_every_figure(sandbox: Sandbox) -> None:
    args = [
        "bench",
        "--users",
        "50",
        "--threads",
        "40",
        "--messages",
        "2000",
        "--rotate-rows",
        "300",
        "--repeat",
        "2",
        "--format",
        "json",
        "--explain",
        "--database-url",
        sandbox.url_for("migrator"),
        "--app-url",
        sandbox.url_for("app"),
        "--admin-url",
        sandbox.url_for("admin"),
        "--audit-url",
        sandbox.url_for("auditor"),
    ]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    r = report["results"]
    for name in ("thread_list", "message_history"):
        f = r["rls_overhead"][name]
        assert f["rls_ms"]["n"] == 2 and f["bypass_ms"]["n"] == 2
        assert f["ratio"] > 0 and isinstance(f["met"], bool)
    assert r["rls_overhead"]["thread_list_design_query_ms"]["median"] > 0
    assert r["message_history"]["ms"]["median"] > 0
    assert set(r["message_history"]["decrypt_us_per_row"]) == {
        "rows",
        "chat_decrypt_message",
        "pgp_sym_decrypt",
    }
    z = r["session_reset"]
    for figure in (
        "reset_ms",
        "pre_ping_ms",
        "discard_all_ms",
        "request_prepared_ms",
        "request_unprepared_ms",
    ):
        assert z[figure]["n"] == 2 and z[figure]["median"] > 0
    w = r["encryption_write"]
    assert w["encrypted_rows_per_s"] > 0 and w["plaintext_rows_per_s"] > 0 and w["ratio"] > 0
    o = r["rotation"]
    assert o["rows"] == 300 and o["rotate_rows_per_s"] > 0 and o["plain_rows_per_s"] > 0
    assert o["app_insert_during_rotation_ms"]["n"] >= 1
    assert r["audit"]["status"] in {"ok", "n/a"}
    assert r["deploy"]["seconds"]["median"] > 0
    # At this scale the planner may prefer sequential scans: only check the plans are there.
    for plan in report["plans"].values():
        assert "Execution Time" in plan and "Buffers" in plan
    # The dedicated database is gone afterwards.
    with sandbox.admin_connect() as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s",
            (report["environment"]["database"],),
        ).fetchone()
    assert left == (0,)


def test_bench_rejects_bad_scale() -> None:
    result = CliRunner().invoke(cli, ["bench", "--repeat", "0"])
    assert result.exit_code == 2
    assert "--repeat must be at least 1" in result.output
