"""Locate the PostgreSQL binaries (initdb, pg_ctl, pg_dump, ...) and run them without secrets.

Client-only installs lack the server binaries, hence the search. Every binary runs with
`child_env()`: no PG* variable that could redirect it, no CHATSEC_* variable (several
hold secrets: the keyring passphrase, database URLs with passwords).

Client tools that chatsec waits for (pg_dump, pg_restore: `start_tool`, `run_tool`) also
die with chatsec: they run in a process group of their own, are stopped when chatsec is
interrupted, and on Linux get SIGTERM from the kernel when chatsec dies, even of SIGKILL.
The sandbox's server commands (cluster.py) do not go through here: `pg_ctl start` leaves
a server running on purpose.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import IO, Any

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


# -- client tools that die with chatsec ---------------------------------------------------

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# How long a stopped tool gets to exit on SIGTERM before it is killed.
STOP_GRACE_S = 5.0


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl(2), resolved once in chatsec itself; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    prctl: Any = ctypes.CDLL(None, use_errno=True).prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl  # type: ignore[no-any-return]


_PRCTL = _load_prctl()


def _die_with(parent: int) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGTERM when `parent` (chatsec) dies.

    preexec_fn is the only hook that runs in the child between fork and exec, and Python
    has no prctl of its own; so the child makes one ctypes call to libc's prctl, resolved
    before the fork: no import or symbol lookup in the child. (preexec_fn can deadlock a
    child forked while another thread holds a lock; chatsec starts its tools from a
    single-threaded process, and the child does as little as possible.) The setting
    survives exec, is not inherited by the tool's own children, and fires when the
    forking *thread* ends: tools are started by the thread that waits for them. If
    chatsec died before the call, no signal would ever come: the parent check after it
    covers that race (the child then exits instead of running the tool).
    """
    prctl = _PRCTL
    if prctl is None:
        return None

    def in_child() -> None:
        if prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:
            os._exit(1)

    return in_child


def start_tool(
    cmd: list[str],
    env: Mapping[str, str] | None = None,
    *,
    stdout: int | IO[Any],
    stderr: int | IO[Any],
) -> subprocess.Popen[bytes]:
    """Start a client tool with `child_env(env)` that dies with chatsec (see `stop_tool`)."""
    try:
        return subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,  # in a group of its own, reading a terminal would stop it
            stdout=stdout,
            stderr=stderr,
            env=child_env(env),
            # Its own process group: a terminal's Ctrl-C reaches chatsec only, which then
            # stops the tool (and anything it started) in order, with `stop_tool`.
            process_group=0,
            preexec_fn=_die_with(os.getpid()),  # see _die_with for why a preexec_fn
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise ChatsecError(f"cannot run {Path(cmd[0]).name}: {exc}") from None


def stop_tool(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the tool's process group, SIGKILL after STOP_GRACE_S; reaped either way."""
    if proc.poll() is not None:
        return  # reaped: its pid, and so its group id, may already belong to another process
    _signal_group(proc.pid, signal.SIGTERM)
    try:
        proc.wait(STOP_GRACE_S)
    except subprocess.TimeoutExpired:
        _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _signal_group(pgid: int, signum: int) -> None:
    with suppress(ProcessLookupError):  # already gone
        os.killpg(pgid, signum)


def run_tool(
    cmd: list[str], env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a client tool to completion with `child_env(env)`; a failure to start is one line.

    Interrupted (Ctrl-C, or SIGTERM within `sigterm_interrupts`), or past TIMEOUT_S, the
    tool is stopped before the exception goes on: it never outlives the wait for it.
    """
    proc = start_tool(cmd, env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    with proc:  # closes the pipes, whatever happens
        try:
            out, err = proc.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            stop_tool(proc)
            raise ChatsecError(
                f"{Path(cmd[0]).name} did not finish within {TIMEOUT_S}s and was stopped"
            ) from None
        except BaseException:
            stop_tool(proc)
            raise
    return subprocess.CompletedProcess(cmd, proc.returncode, _text(out), _text(err))


def _text(output: bytes | None) -> str:
    return (output or b"").decode("utf-8", "replace")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C inside `sigterm_interrupts()` so that cleanup runs."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` instead of ending chatsec on the spot.

    Python's default SIGTERM ends the process without unwinding: no tool stopped, no
    temporary file removed. Only the main thread may set handlers; elsewhere this is a
    no-op (the death signal still applies).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def first_error(stderr: str) -> str:
    """The line of a tool's stderr that best says why it failed."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[0]
