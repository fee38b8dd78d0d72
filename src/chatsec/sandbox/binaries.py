"""Locate the PostgreSQL *server* binaries (initdb, pg_ctl), which client-only installs lack."""

from __future__ import annotations

import re
import shutil
import subprocess
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
