"""Shared by the audit and ssl verify tests: running an audit, and a second sandbox to break."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chatsec.audit.api import audit
from chatsec.audit.runner import AuditReport
from chatsec.identity import IDENTITY_KEYRING_ENV
from chatsec.sandbox import Sandbox


def failing(report: AuditReport) -> set[str]:
    return {r.check_id for r in report.results if r.status == "failed"}


def result(report: AuditReport, check_id: str) -> Any:
    return next(r for r in report.results if r.check_id == check_id)


def run_audit(db: Any, probe: bool = False, **kwargs: Any) -> AuditReport:
    """An audit as the sandbox's auditor login, probes (as the app login) off unless asked,
    with the session's identity keyring (as `chatsec audit` finds it in the environment)."""
    kwargs.setdefault("identity_keyring", Path(os.environ[IDENTITY_KEYRING_ENV]))
    return audit(db.auditor, app_url=db.app, probe=probe, **kwargs)


def encryption_deployed(db: Any) -> bool:
    with db.sandbox.admin_connect(db.name) as conn:
        row = conn.execute(
            "SELECT to_regprocedure('chat.encrypt_message()') IS NOT NULL"
        ).fetchone()
    return bool(row and row[0])


def reload(box: Sandbox, until: Callable[[], bool], timeout: float = 10.0) -> None:
    """SIGHUP the postmaster (what pg_ctl reload does) and wait for `until` to hold."""
    pid = box.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            raise AssertionError("the server did not pick up the reloaded configuration")
        time.sleep(0.05)


def write_server_file(box: Sandbox, path: Path, data: bytes, mode: int = 0o600) -> None:
    """Write a file the server reads, owned by the server's OS user as the sandbox does."""
    box._write_file(path, data, mode, server_owned=True)  # noqa: SLF001 - test helper
