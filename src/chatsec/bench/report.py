"""The benchmark's results as a rich table (text) or stable JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table

Row = tuple[str, str, str, str]  # measure, figure, target, verdict

PAIR_TITLES = {
    "thread_list": "Thread List (chatsec.queries)",
    "message_history": "Message History (chatsec.queries)",
    "thread_list_design": "Thread List, the design's text",
    "message_history_design": "Message History, the design's text",
}


def to_json(report: dict[str, Any]) -> str:
    return json.dumps(report, indent=2, sort_keys=True, default=str)


def _ms(s: dict[str, Any]) -> str:
    return f"{s['median']:.2f} ms (p25 {s['p25']:.2f}, p75 {s['p75']:.2f}, n={s['n']})"


def _f(value: Any, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _verdicts(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["figure"]: c for c in report["checks"]}


def _check(checks: dict[str, dict[str, Any]], figure: str) -> tuple[str, str]:
    c = checks[figure]
    return f"{c['op']} {c['target']}", "met" if c["met"] else "MISSED"


def _pair_rows(name: str, p: dict[str, Any], checks: dict[str, dict[str, Any]]) -> list[Row]:
    r, a, b = p["ratio"], p["a_ms"], p["b_ms"]
    base = f"rls.{name}"
    heavy = next(u for u in p["per_user"] if u["heaviest"])
    worst = max(p["per_user"], key=lambda u: u["ratio"] if u["ratio"] is not None else float("inf"))
    rows: list[Row] = [
        (
            f"{PAIR_TITLES[name]}: app (RLS) / superuser, over {p['users']} users",
            f"ratio p10 {_f(r['p10'])}, median {_f(r['median'])}, p90 {_f(r['p90'])}",
            *(_check(checks, f"{base}.ratio.median") if not p["design_text"] else ("", "")),
        ),
        (
            f"  heaviest user ({heavy['threads']} threads)",
            f"ratio {_f(r['heaviest'])} ({_f(a['heaviest'])} / {_f(b['heaviest'])} ms)",
            *(_check(checks, f"{base}.ratio.heaviest") if not p["design_text"] else ("", "")),
        ),
        (
            "  median ms over users, app / superuser",
            f"{_f(a['median'])} / {_f(b['median'])} ms (n={p['repeat']} per user and side)",
            "",
            "",
        ),
    ]
    if p["design_text"]:
        rows.append(
            (
                f"  worst user ({worst['threads']} threads, {str(worst['user'])[:8]})",
                f"ratio {_f(r['max'])} ({_f(worst['a_ms'])} / {_f(worst['b_ms'])} ms)",
                *_check(checks, f"{base}.ratio.max"),
            )
        )
        j = p["jit"]
        rows.append(
            (
                "  users whose plan was JIT-compiled: app / superuser / app only",
                f"{j['app_users']} / {j['superuser_users']} / {len(j['app_only'])}",
                *_check(checks, f"{base}.jit.app_only"),
            )
        )
    if p["rows_mismatched"]:
        rows.append(
            (
                "  users for whom the two sides returned different rows",
                str(len(p["rows_mismatched"])),
                # The design's text under RLS gets what the policies let it see.
                *(_check(checks, f"{base}.rows_mismatched") if not p["design_text"] else ("", "")),
            )
        )
    return rows


def _write_rows(r: dict[str, Any], checks: dict[str, dict[str, Any]]) -> list[Row]:
    d, w, o = r["decrypt"], r["insert"], r["rotation"]
    e, p = w["encrypted"], w["plaintext"]
    f, c = o["floor"], o["bare_crypto"]
    idle, during = o["app_insert_idle_ms"], o["app_insert_during_rotation_ms"]
    return [
        (
            f"Decrypt per row ({d['rows']:,} rows): chat.decrypt_message / pgp_sym_decrypt",
            f"{_f(d['chat_decrypt_message_us_per_row'])} / {_f(d['pgp_sym_decrypt_us_per_row'])} us",
            "",
            "",
        ),
        ("  ratio", _f(d["ratio"]), *_check(checks, "decrypt.ratio")),
        (
            f"Insert, batches of {w['batch']}, statement alone: encrypted / plaintext",
            f"{e['statement_rows_per_s']:,} / {p['statement_rows_per_s']:,} rows/s",
            "",
            "",
        ),
        ("  ratio", _f(w["ratio_statement"]), *_check(checks, "insert.ratio_statement")),
        (
            "  statement + commit: encrypted / plaintext",
            f"{e['statement_and_commit_rows_per_s']:,} / "
            f"{p['statement_and_commit_rows_per_s']:,} rows/s",
            "",
            "",
        ),
        (
            "  ratio",
            _f(w["ratio_statement_and_commit"]),
            *_check(checks, "insert.ratio_statement_and_commit"),
        ),
        (
            "  app post_messages (RLS + trigger)",
            f"{w['app_post_messages_rows_per_s']:,} rows/s",
            "",
            "",
        ),
        (
            f"chatsec keys rotate, every row ({o['rows']:,} rows, {o['passes']} pass(es))",
            f"{o['rows_per_s']:,} rows/s ({_f(o['us_per_row'])} us/row)",
            "",
            "",
        ),
        (
            f"  no-crypto floor: keyset rewrite of every row ({f['rows']:,})",
            f"{f['rows_per_s']:,} rows/s ({_f(f['us_per_row'])} us/row)",
            "",
            "",
        ),
        (
            "  ratio (throughput)",
            _f(o["ratio_to_floor"]),
            *_check(checks, "rotation.ratio_to_floor"),
        ),
        (
            f"  bare decrypt + encrypt ({c['rows']:,} rows, no write)",
            f"{_f(c['us_per_row'])} us/row",
            "",
            "",
        ),
        (
            "  (rotation - floor) / bare crypto, per row",
            _f(o["crypto_overhead_ratio"]),
            *_check(checks, "rotation.crypto_overhead_ratio"),
        ),
        (
            "App insert p99, idle / during rotation",
            f"{idle['p99']:.2f} / {during['p99']:.2f} ms (n={idle['n']}/{during['n']})",
            "",
            "",
        ),
    ]


def _other_rows(r: dict[str, Any]) -> list[Row]:
    z, a, i = r["session_reset"], r["audit"], r["identity"]
    calls, cost = i["calls_per_statement"], i["verify_ms_per_statement"]
    return [
        (
            "Signed identity: chat.current_user_id() per call",
            f"{_f(i['verify_us_per_call'])} us",
            "",
            "",
        ),
        *(
            (
                f"  calls per statement, {PAIR_TITLES[name]}",
                f"{calls[name]} ({_f(cost[name], 3)} ms)",
                "",
                "",
            )
            for name in calls
        ),
        ("Pooled session reset per checkout", _ms(z["reset_ms"]), "", ""),
        ("  pre-ping it replaces (SELECT 1)", _ms(z["pre_ping_ms"]), "", ""),
        ("  DISCARD ALL instead", _ms(z["discard_all_ms"]), "", ""),
        (
            "Message History request, prepared statements kept",
            _ms(z["request_prepared_ms"]),
            "",
            "",
        ),
        ("  same, no prepared statements", _ms(z["request_unprepared_ms"]), "", ""),
        (
            "chatsec audit",
            f"{a['seconds']['median']:.2f} s" if a["status"] == "ok" else f"n/a: {a['reason']}",
            "",
            "",
        ),
        ("chatsec deploy (empty database)", f"{r['deploy']['seconds']['median']:.2f} s", "", ""),
    ]


def rows(report: dict[str, Any]) -> list[Row]:
    """(measure, figure, target, verdict) lines of the results table."""
    r, checks = report["results"], _verdicts(report)
    out: list[Row] = []
    for name, pair in r["rls"].items():
        out += _pair_rows(name, pair, checks)
    return out + _write_rows(r, checks) + _other_rows(r)


def print_text(report: dict[str, Any], console: Console) -> None:
    env, data, sample = report["environment"], report["data"], report["sample"]
    console.print(
        f"{env['cpu']} ({env['cores']} cores), PostgreSQL {env['server_version']} "
        f"(shared_buffers {env['shared_buffers']}, jit {env['jit']}); "
        f"{data['users']:,} users, {data['threads']:,} threads, {data['messages']:,} messages "
        f"({data['messages_with_attachments_pct']} % with attachments, "
        f"{data['threads_over_10k_messages']} threads over 10,000) generated in "
        f"{report['seconds']['generate']} s; {sample['n']} users sampled (seed {sample['seed']}), "
        f"the heaviest in {sample['heaviest']['threads']} threads",
        markup=False,
        highlight=False,
    )
    table = Table("measure", "figure", "target", "verdict")
    for measure_, figure, target, verdict in rows(report):
        table.add_row(measure_, figure, target, verdict)
    console.print(table)
    met = sum(c["met"] for c in report["checks"])
    console.print(f"{met} of {len(report['checks'])} targets met", markup=False)
    for name, plan in report.get("plans", {}).items():
        console.print(f"\nEXPLAIN (ANALYZE, BUFFERS) {name}, heaviest user:", markup=False)
        console.print(plan, markup=False, highlight=False)
