"""`chatsec bench` without the CLI: a dedicated database, a generated chat, every figure."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chatsec.bench import measure
from chatsec.bench.generate import Scale, generate
from chatsec.bench.target import Logins, create_database, drop_database
from chatsec.db.connect import connect
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Keyring
from chatsec.migrate import runner

Say = Callable[[str], None]


@dataclass(frozen=True)
class BenchConfig:
    scale: Scale = field(default_factory=Scale)
    repeat: int = 20
    insert_batch: int = 500
    rotate_batch: int = 500
    keep: bool = False

    def check(self) -> None:
        s = self.scale
        for name, value, low in (
            ("--users", s.users, 2),
            ("--threads", s.threads, 1),
            ("--messages", s.messages, 10),
            ("--repeat", self.repeat, 1),
            ("--batch", self.insert_batch, 1),
        ):
            if value < low:
                raise ChatsecError(f"{name} must be at least {low}, not {value}")


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


def _run(db: Logins, name: str, config: BenchConfig, tmp: Path, say: Say) -> dict[str, Any]:
    started = time.perf_counter()
    runner.deploy(db.migrator)
    # A throwaway keyring: the older key encrypts the rows the rotation rewrites.
    keyring = Keyring.empty(tmp / "keyring.json")
    keyring.generate()
    keyring.generate()
    keyring.save()
    t0 = time.perf_counter()
    generate(db.admin, config.scale, keyring, say)
    generate_s = time.perf_counter() - t0
    with connect(db.admin, autocommit=True, application_name="chatsec bench") as conn:
        row = conn.execute("SHOW server_version").fetchone()
    subject = measure.pick_subject(db)
    say(
        f"subject: a user in {subject.threads} threads; thread of {subject.thread_messages} messages"
    )
    engines = measure.Engines(db, keyring)
    results: dict[str, Any] = {}
    try:
        say("RLS overhead")
        results["rls_overhead"] = measure.rls_overhead(engines, subject, config.repeat)
        say("Message History latency")
        results["message_history"] = measure.history_latency(engines, subject, config.repeat)
        say("pooled session reset")
        results["session_reset"] = measure.session_reset(db, engines, subject, config.repeat)
        plans = measure.explain_plans(engines, subject)
        say("encryption write cost")
        results["encryption_write"] = measure.write_cost(
            db, engines, subject, config.repeat, config.insert_batch
        )
        say("rotation")
        results["rotation"] = measure.rotation(db, engines, subject, keyring, config.rotate_batch)
    finally:
        engines.dispose()
    say("chatsec audit")
    results["audit"] = measure.audit_time(db, keyring.path, config.repeat)
    say("chatsec deploy")
    results["deploy"] = measure.deploy_time(db, config.repeat)
    return {
        "environment": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "postgresql": str(row[0]) if row else "unknown",
            "database": name,
        },
        "scale": asdict(config.scale),
        "repeat": config.repeat,
        "subject": {"user_threads": subject.threads, "thread_messages": subject.thread_messages},
        "generate_seconds": round(generate_s, 2),
        "total_seconds": round(time.perf_counter() - started, 2),
        "results": results,
        "plans": plans,
    }
