"""Wall time of two commands: `chatsec audit` and `chatsec deploy` to head."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from chatsec.bench.stats import summarize
from chatsec.bench.target import Logins, scratch_database
from chatsec.migrate import runner


def audit_time(
    logins: Logins, keyring_path: Path, identity_keyring: Path, runs: int
) -> dict[str, Any]:
    """`chatsec audit` wall time, when this chatsec has the audit (imported lazily)."""
    if logins.auditor is None:
        return {"status": "n/a", "reason": "no auditor URL (--audit-url)"}
    try:
        from chatsec.audit.api import audit
    except ImportError as exc:
        return {"status": "n/a", "reason": f"chatsec.audit not available: {exc}"}
    auditor, app = logins.auditor, logins.app
    samples = []
    try:
        for _ in range(runs):
            start = time.perf_counter()
            audit(auditor, app_url=app, keyring=keyring_path, identity_keyring=identity_keyring)
            samples.append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 - another component; its failure is a figure here
        return {"status": "n/a", "reason": f"audit failed: {type(exc).__name__}: {exc}"}
    return {"status": "ok", "seconds": summarize(samples).to_json()}


def deploy_time(logins: Logins, runs: int) -> dict[str, Any]:
    """`chatsec deploy` to head on fresh empty databases."""
    samples = []
    for _ in range(runs):
        with scratch_database(logins, prefix="chatsec_bench_deploy") as name:
            start = time.perf_counter()
            runner.deploy(logins.on(name).migrator)
            samples.append(time.perf_counter() - start)
    return {"seconds": summarize(samples).to_json()}
