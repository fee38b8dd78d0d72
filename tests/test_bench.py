"""`chatsec bench --quick`: it completes and reports every figure (no thresholds)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from click.testing import CliRunner

from chatsec.cli.main import cli
from chatsec.sandbox import Sandbox

PAIRS = ("thread_list", "message_history", "thread_list_design", "message_history_design")
CHECKS = {
    *(
        f"rls.{p}.{f}"
        for p in PAIRS[:2]
        for f in ("ratio.median", "ratio.heaviest", "rows_mismatched")
    ),
    *(f"rls.{p}.{f}" for p in PAIRS[2:] for f in ("ratio.max", "jit.app_only")),
    "decrypt.ratio",
    "insert.ratio_statement",
    "insert.ratio_statement_and_commit",
    "rotation.ratio_to_floor",
    "rotation.crypto_overhead_ratio",
}


@pytest.fixture(scope="module")
def report(sandbox: Sandbox) -> dict[str, Any]:
    args = [
        "bench",
        "--quick",
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
    parsed: dict[str, Any] = json.loads(result.stdout)
    return parsed


def _positive(*values: Any) -> bool:
    return all(isinstance(v, int | float) and v > 0 for v in values)


def test_quick_run_samples_users_with_the_heaviest_among_them(report: dict[str, Any]) -> None:
    sample, data, config = report["sample"], report["data"], report["config"]
    assert config["quick"] is True and config["users_sampled"] == 8
    assert data["messages"] == config["scale"]["messages"] == 3000
    assert sample["n"] == len(sample["users"]) == 8
    assert len({u["user"] for u in sample["users"]}) == 8
    assert [u["heaviest"] for u in sample["users"]].count(True) == 1
    assert sample["heaviest"]["threads"] == data["heaviest_user_threads"]
    assert all(u["thread_messages"] > 0 for u in sample["users"])


def test_every_pair_is_reported_per_user_and_over_users(report: dict[str, Any]) -> None:
    rls = report["results"]["rls"]
    assert set(rls) == set(PAIRS)
    for name, pair in rls.items():
        assert pair["a"]["login"] == "app" and pair["b"]["login"] == "superuser"
        assert pair["design_text"] is name.endswith("_design")
        for figure in ("ratio", "a_ms", "b_ms"):
            spread = pair[figure]
            assert _positive(*(spread[k] for k in ("p10", "median", "p90", "min", "max")))
            assert _positive(spread["heaviest"]) and spread["n"] == 8
        assert len(pair["per_user"]) == 8
        for user in pair["per_user"]:
            assert _positive(user["a_ms"], user["b_ms"], user["ratio"])
            for plan in (user["a_plan"], user["b_plan"]):
                assert isinstance(plan["jit"], bool) and plan["execution_ms"] > 0
        assert set(pair["jit"]) == {"app_users", "superuser_users", "app_only"}
        if not pair["design_text"]:
            # chatsec's query and its baseline answer the same question: the same rows.
            assert pair["rows_mismatched"] == []


def test_crypto_and_write_figures_are_reported(report: dict[str, Any]) -> None:
    r = report["results"]
    d = r["decrypt"]
    assert d["rows"] == 200
    assert _positive(d["chat_decrypt_message_us_per_row"], d["pgp_sym_decrypt_us_per_row"])
    w = r["insert"]
    for side in (w["encrypted"], w["plaintext"]):
        for figure in ("statement_ms", "commit_ms", "statement_and_commit_ms"):
            assert side[figure]["n"] == 3 and side[figure]["median"] > 0
        assert _positive(side["statement_rows_per_s"], side["statement_and_commit_rows_per_s"])
    assert _positive(w["ratio_statement"], w["ratio_statement_and_commit"])
    o = r["rotation"]
    # Every row: the generated ones and every one the insert figures added since.
    assert o["rows"] > 3000 and o["passes"] >= 1 and o["key_generated_by_rotate"] is False
    assert o["floor"]["rows"] > 3000 and o["bare_crypto"]["rows"] >= 3000
    assert _positive(o["rows_per_s"], o["floor"]["rows_per_s"], o["bare_crypto"]["us_per_row"])
    assert o["ratio_to_floor"] > 0 and o["crypto_overhead_ratio"] is not None
    assert o["app_insert_idle_ms"]["n"] >= 1 and o["app_insert_during_rotation_ms"]["n"] >= 1


def test_other_figures_checks_and_plans(report: dict[str, Any], sandbox: Sandbox) -> None:
    r = report["results"]
    for figure in (
        "reset_ms",
        "pre_ping_ms",
        "discard_all_ms",
        "request_prepared_ms",
        "request_unprepared_ms",
    ):
        assert r["session_reset"][figure]["n"] == 3 and r["session_reset"][figure]["median"] > 0
    identity = r["identity"]
    assert identity["verify_us_per_call"] > 0
    # Each query verifies the identity at least once (its policies and helpers), and
    # the cost per statement is that many calls at the measured cost per call.
    for name in ("thread_list", "message_history"):
        calls = identity["calls_per_statement"][name]
        assert calls >= 1
        assert identity["verify_ms_per_statement"][name] == pytest.approx(
            calls * identity["verify_us_per_call"] / 1000.0, rel=1e-2, abs=1e-4
        )
    assert r["audit"]["status"] in {"ok", "n/a"}
    assert r["deploy"]["seconds"]["median"] > 0
    assert {c["figure"] for c in report["checks"]} == CHECKS
    assert all(isinstance(c["met"], bool) for c in report["checks"])
    assert report["all_met"] == all(c["met"] for c in report["checks"])
    # At this scale the planner may prefer sequential scans: only check the plans are there.
    assert set(report["plans"]) == {
        f"{p} ({login})" for p in PAIRS for login in ("app", "superuser")
    }
    for plan in report["plans"].values():
        assert "Execution Time" in plan and "Buffers" in plan
    # The dedicated database is gone afterwards.
    with sandbox.admin_connect() as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_database WHERE datname = %s",
            (report["environment"]["database"],),
        ).fetchone()
    assert left == (0,)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repeat", "0"], "--repeat must be at least 1"),
        (["--users-sampled", "0"], "--users-sampled must be at least 1"),
        (["--quick", "--users-sampled", "61"], "--users-sampled (61) cannot exceed --users (60)"),
        (["--rotate-batch", "0"], "--rotate-batch must be at least 1"),
    ],
)
def test_bench_rejects_bad_options(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["bench", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
