"""Point-in-time recovery drill on the sandbox: a base backup plus the WAL archive, to a time."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from chatsec.errors import ChatsecError
from chatsec.sandbox import Sandbox

PROMOTE_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class RecoveryResult:
    directory: Path
    port: int
    target_time: datetime
    recovered_to: datetime | None  # pg_last_xact_replay_timestamp(): the last commit replayed


def parse_target_time(raw: str) -> datetime:
    """An ISO 8601 time with an explicit offset; the server would read a bare one in its zone."""
    try:
        parsed = datetime.fromisoformat(raw.strip())
    except ValueError:
        raise ChatsecError(
            f"bad --target-time {raw!r}: expected ISO 8601 such as 2026-11-25T10:00:00+00:00"
        ) from None
    if parsed.tzinfo is None:
        raise ChatsecError(
            f"--target-time {raw!r} has no time zone: add one (+00:00), or the recovery would "
            "use the server's zone"
        )
    return parsed


def recover(base: Path, target: str, new_dir: Path, source_dir: Path) -> RecoveryResult:
    """Recover a new sandbox in `new_dir` to `target` and wait until it is promoted."""
    when = parse_target_time(target)
    source = Sandbox(source_dir)
    new = Sandbox(new_dir)
    if new.directory == source.directory:
        raise ChatsecError("--dir must be a new directory, not the source sandbox's")
    settings = {
        "recovery_target_time": "'" + when.isoformat(sep=" ") + "'",
        # Stop just after the last commit at or before the target and open for writes.
        "recovery_target_inclusive": "on",
        "recovery_target_action": "'promote'",
    }
    new.recover_from(base, source, settings)
    replayed = wait_for_promotion(new)
    return RecoveryResult(new.directory, new.port, when, replayed)


def wait_for_promotion(box: Sandbox, timeout: float = PROMOTE_TIMEOUT_S) -> datetime | None:
    """Block until `box` leaves recovery; fail with the server log when it stops instead."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with box.admin_connect("postgres") as conn:
                row = conn.execute(
                    "SELECT pg_catalog.pg_is_in_recovery(), "
                    "pg_catalog.pg_last_xact_replay_timestamp()"
                ).fetchone()
            if row is not None and not row[0]:
                replayed: datetime | None = row[1]
                return replayed
        except (ChatsecError, psycopg.Error):
            # Not accepting connections yet, or recovery failed: the status says which.
            if not box.status().running:
                raise ChatsecError(
                    f"recovery of {box.directory} stopped before reaching the target: "
                    f"{_log_tail(box)}"
                ) from None
        if time.monotonic() > deadline:
            raise ChatsecError(
                f"{box.directory} still in recovery after {timeout:.0f}s: {_log_tail(box)}"
            )
        time.sleep(0.2)


def _log_tail(box: Sandbox) -> str:
    try:
        lines = box.log_file.read_text(errors="replace").splitlines()
    except OSError:
        return "(no server log)"
    interesting = [ln for ln in lines if "FATAL" in ln or "recovery" in ln]
    return " | ".join((interesting or lines)[-3:]) or "(server log empty)"
