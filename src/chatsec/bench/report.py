"""The benchmark's results as a rich table (text) or stable JSON."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console
from rich.table import Table


def to_json(report: dict[str, Any], explain: bool) -> str:
    out = dict(report)
    if not explain:
        out.pop("plans", None)
    return json.dumps(out, indent=2, sort_keys=True, default=str)


def _ms(s: dict[str, Any]) -> str:
    return f"{s['median']:.2f} ms (p25 {s['p25']:.2f}, p75 {s['p75']:.2f}, n={s['n']})"


def _met(figures: dict[str, Any]) -> str:
    return "met" if figures["met"] else "MISSED"


def rows(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, figure, target) lines of the results table."""
    r = report["results"]
    out: list[tuple[str, str, str]] = []
    for name in ("thread_list", "message_history"):
        f = r["rls_overhead"][name]
        out.append((f"RLS overhead, {name.replace('_', ' ')} (app)", _ms(f["rls_ms"]), ""))
        out.append(("  same query, RLS bypassed (superuser)", _ms(f["bypass_ms"]), ""))
        out.append(("  ratio", f"{f['ratio']:.2f}", f"<= {f['target']} {_met(f)}"))
    out.append(
        (
            "Thread List, literal design query (app)",
            _ms(r["rls_overhead"]["thread_list_design_query_ms"]),
            "",
        )
    )
    h = r["message_history"]
    out.append((f"Message History page of {h['limit']}, decrypted", _ms(h["ms"]), ""))
    out.append(("  same page without decryption", _ms(h["without_decryption_ms"]), ""))
    d = h["decrypt_us_per_row"]
    out.append(
        (
            "  decrypt per row: chat.decrypt_message / pgp_sym_decrypt",
            f"{d['chat_decrypt_message']} / {d['pgp_sym_decrypt']} us",
            "",
        )
    )
    z = r["session_reset"]
    out.append(("Pooled session reset per checkout", _ms(z["reset_ms"]), ""))
    out.append(("  pre-ping it replaces (SELECT 1)", _ms(z["pre_ping_ms"]), ""))
    out.append(("  DISCARD ALL instead", _ms(z["discard_all_ms"]), ""))
    out.append(
        ("Message History request, prepared statements kept", _ms(z["request_prepared_ms"]), "")
    )
    out.append(("  same, no prepared statements", _ms(z["request_unprepared_ms"]), ""))
    w = r["encryption_write"]
    out.append(
        (
            f"Batched insert ({w['batch']} rows), with trigger",
            f"{w['encrypted_rows_per_s']:,} rows/s",
            "",
        )
    )
    out.append(("  same, trigger off (plaintext)", f"{w['plaintext_rows_per_s']:,} rows/s", ""))
    out.append(("  ratio", f"{w['ratio']:.2f}", f">= {w['target']} {_met(w)}"))
    out.append(("  app post_messages (RLS + trigger)", f"{w['app_rows_per_s']:,} rows/s", ""))
    o = r["rotation"]
    out.append(
        (f"chatsec keys rotate ({o['rows']:,} rows)", f"{o['rotate_rows_per_s']:,} rows/s", "")
    )
    out.append(("  plain keyset rewrite, no crypto", f"{o['plain_rows_per_s']:,} rows/s", ""))
    out.append(("  ratio", f"{o['ratio']:.2f}", f">= {o['target']} {_met(o)}"))
    idle, during = o["app_insert_idle_ms"], o["app_insert_during_rotation_ms"]
    out.append(
        (
            "App insert p99, idle / during rotation",
            f"{idle['p99']:.2f} / {during['p99']:.2f} ms (n={idle['n']}/{during['n']})",
            "",
        )
    )
    a = r["audit"]
    out.append(
        (
            "chatsec audit",
            f"{a['seconds']['median']:.2f} s" if a["status"] == "ok" else f"n/a: {a['reason']}",
            "",
        )
    )
    out.append(("chatsec deploy (empty database)", f"{r['deploy']['seconds']['median']:.2f} s", ""))
    return out


def print_text(report: dict[str, Any], explain: bool, console: Console) -> None:
    env, scale = report["environment"], report["scale"]
    console.print(
        f"{env['cpu']} ({env['cores']} cores), PostgreSQL {env['postgresql']}; "
        f"{scale['users']:,} users, {scale['threads']:,} threads, {scale['messages']:,} messages "
        f"generated in {report['generate_seconds']} s; subject in "
        f"{report['subject']['user_threads']} threads, busiest thread "
        f"{report['subject']['thread_messages']:,} messages"
    )
    table = Table("measure", "median (spread)", "target")
    for measure_, figure, target in rows(report):
        table.add_row(measure_, figure, target)
    console.print(table)
    if explain:
        for name, plan in report["plans"].items():
            console.print(f"\nEXPLAIN (ANALYZE, BUFFERS) {name}, as the app login:", markup=False)
            console.print(plan, markup=False, highlight=False)
