"""Locate the PostgreSQL binaries (initdb, pg_ctl, pg_dump, ...) and run them without secrets.

Client-only installs lack the server binaries, hence the search. Every binary runs with
`child_env()`: no PG* variable that could redirect it, no CHATSEC_* variable (several
hold secrets: the keyring passphrase, database URLs with passwords).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

from chatsec.errors import ChatsecError

_REQUIRED = ("initdb", "pg_ctl", "postgres")
_DEBIAN_ROOT = Path("/usr/lib/postgresql")
NOT_FOUND = "PostgreSQL server binaries not found: apt-get install postgresql postgresql-contrib"


def _has_server(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in _REQUIRED)


def _from_pg_config() -> Path | None:
    # libpq-dev ships a pg_config whose --bindir (/usr/bin) has no initdb, hence the check.
    exe = shutil.which("pg_config")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "--bindir"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return Path(out) if out else None


def _from_path() -> Path | None:
    exe = shutil.which("initdb")
    # Resolve symlinks (e.g. /usr/local/bin/initdb) to the real install directory.
    return Path(exe).resolve().parent if exe else None


def _debian_dirs() -> list[Path]:
    if not _DEBIAN_ROOT.is_dir():
        return []
    majors = [p for p in _DEBIAN_ROOT.iterdir() if re.fullmatch(r"\d+(\.\d+)?", p.name)]
    # Numeric order, so 10 sorts above 9.
    majors.sort(key=lambda p: tuple(int(x) for x in p.name.split(".")), reverse=True)
    return [p / "bin" for p in majors]


def find_bindir() -> Path:
    """The first directory holding initdb, pg_ctl and postgres, or a ChatsecError."""
    candidates = [_from_pg_config(), _from_path(), *_debian_dirs()]
    for candidate in candidates:
        if candidate is not None and _has_server(candidate):
            return candidate
    raise ChatsecError(NOT_FOUND)


TIMEOUT_S = 3600


def tool(name: str) -> str:
    """The path of a PostgreSQL client tool (the sandbox finder prefers the newest install)."""
    # pg_dump must not be older than the server it dumps.
    return str(find_bindir() / name)


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment pg_dump and pg_restore run with: ours, minus redirects and secrets."""
    # PG* variables (PGHOST, PGSERVICE, ...) could silently redirect the tools. No client
    # tool reads a CHATSEC_* variable, and several hold secrets (the keyring passphrase,
    # database URLs with passwords): dropping the whole prefix cannot miss a new one.
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PG") and not name.startswith("CHATSEC_")
    }
    env.update(extra or {})
    return env


def run_tool(
    cmd: list[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a client tool to completion with `child_env(env)`; a failure to start is one line."""
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, env=child_env(env), timeout=TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ChatsecError(f"cannot run {Path(cmd[0]).name}: {exc}") from None


def first_error(stderr: str) -> str:
    """The line of a tool's stderr that best says why it failed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[0]
