"""`chatsec bench` without the CLI: a dedicated database, a generated chat, every figure."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from chatsec.bench.config import BenchConfig
from chatsec.bench.decrypt import decrypt_cost
from chatsec.bench.engines import Engines
from chatsec.bench.floor import create_plain_copy, drop_plain_copy
from chatsec.bench.generate import describe, generate
from chatsec.bench.identity import identity_cost
from chatsec.bench.insert import insert_cost
from chatsec.bench.ops import audit_time, deploy_time
from chatsec.bench.pairs import explain_heaviest, run_pairs
from chatsec.bench.rotation import rotation_cost
from chatsec.bench.sample import sample_users
from chatsec.bench.session import session_reset
from chatsec.bench.target import Logins, create_database, drop_database
from chatsec.db.connect import connect
from chatsec.identity import Signer
from chatsec.identity.manage import generate_identity_key
from chatsec.keys.keyring import Keyring
from chatsec.migrate import runner

Say = Callable[[str], None]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_bench(logins: Logins, config: BenchConfig, say: Say) -> dict[str, Any]:
    """Create the bench database, fill it, measure, drop it (unless config.keep)."""
    config.check()
    name = create_database(logins)
    db = logins.on(name)
    say(f"bench database {name}")
    try:
        with tempfile.TemporaryDirectory(prefix="chatsec-bench-") as tmp:
            return _run(db, name, config, Path(tmp), say)
    finally:
        if config.keep:
            say(f"kept database {name}")
        else:
            drop_database(logins, name)


def _environment(db: Logins, name: str) -> dict[str, Any]:
    settings = ("server_version", "shared_buffers", "jit", "jit_above_cost", "work_mem")
    values: dict[str, str] = {}
    with connect(db.admin, autocommit=True, application_name="chatsec bench") as conn:
        for setting in settings:
            row: Any = conn.execute(f"SHOW {setting}").fetchone()
            values[setting] = str(row[0])
    return {"cpu": cpu_model(), "cores": os.cpu_count(), "database": name, **values}


def _run(db: Logins, name: str, config: BenchConfig, tmp: Path, say: Say) -> dict[str, Any]:
    started = time.perf_counter()
    runner.deploy(db.migrator)
    keyring = Keyring.empty(tmp / "keyring.json")
    keyring.generate()
    keyring.save()
    identity = Keyring.empty(tmp / "identity-keyring.json")
    generate_identity_key(identity, db.migrator)
    t0 = time.perf_counter()
    generate(db.admin, config.scale, keyring, say)
    generate_s = time.perf_counter() - t0
    data = describe(db.admin)
    sample = sample_users(db.admin, config.users_sampled, config.scale.seed)
    heavy = sample.heaviest
    say(
        f"{len(sample.users)} users sampled; the heaviest in {heavy.threads} threads, "
        f"busiest {heavy.thread_messages} messages"
    )
    engines = Engines(db, keyring, Signer(identity))
    results: dict[str, Any] = {}
    plans: dict[str, str] = {}
    copy_s = 0.0
    try:
        results["rls"] = run_pairs(
            engines, sample, config.repeat, config.design_repeat, config.warmup, say
        )
        if config.explain:
            say("plans (EXPLAIN ANALYZE, BUFFERS) for the heaviest user")
            plans = explain_heaviest(engines, sample)
        say("signed identity: verification per call and per statement")
        results["identity"] = identity_cost(db, name, engines, heavy, config.repeat)
        say("decryption per row")
        results["decrypt"] = decrypt_cost(
            engines, heavy.user_id, config.decrypt_rows, config.repeat, config.scale.seed
        )
        say("pooled session reset")
        results["session_reset"] = session_reset(db, engines, heavy, config.repeat)
        say("plain copy of chat.messages (the write floors)")
        copy_s = create_plain_copy(db)
        try:
            say("encrypted vs plaintext insert")
            results["insert"] = insert_cost(engines, heavy, config.insert_batch, config.repeat)
            say("rotation of the whole table, the floor in lockstep")
            results["rotation"] = rotation_cost(
                db, keyring, engines.identity, heavy, config.rotate_batch, config.idle_seconds
            )
        finally:
            drop_plain_copy(db)
    finally:
        engines.dispose()
    say("chatsec audit")
    results["audit"] = audit_time(db, keyring.path, identity.path, config.command_runs)
    say("chatsec deploy")
    results["deploy"] = deploy_time(db, config.command_runs)
    found = [c for section in _sections(results) for c in section.get("checks", [])]
    report: dict[str, Any] = {
        "environment": _environment(db, name),
        "config": {
            **{k: v for k, v in asdict(config).items() if k not in ("scale", "keep", "explain")},
            "scale": asdict(config.scale),
        },
        "data": data,
        "sample": sample.to_json(),
        "results": results,
        "checks": found,
        "all_met": all(c["met"] for c in found),
        "seconds": {
            "generate": round(generate_s, 2),
            "plain_copy": round(copy_s, 2),
            "total": round(time.perf_counter() - started, 2),
        },
    }
    if config.explain:
        report["plans"] = plans
    return report


def _sections(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [*results["rls"].values(), *(v for k, v in results.items() if k != "rls")]
