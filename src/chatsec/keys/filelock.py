"""An exclusive lock beside the keyring file, so read-modify-write of a keyring is serial.

The keyring itself is replaced atomically by rename, so it cannot carry the lock: a
lock on the old file would not stop a writer that opened the new one. The lock file
`.NAME.lock` sits in the same directory, holds no secret, and stays; flock(2) locks
die with the process that holds them, so a killed command never leaves it locked.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import time
from pathlib import Path

from chatsec.errors import ChatsecError

_POLL_S = 0.05


def lock_path(keyring: Path) -> Path:
    return keyring.parent / f".{keyring.name}.lock"


def temp_file_pattern(keyring: Path) -> re.Pattern[str]:
    """Names of the temporary files a save of `keyring` writes before its rename."""
    return re.compile(rf"\.{re.escape(keyring.name)}\.[0-9a-f]{{8}}\.tmp")


class KeyringLock:
    """flock(LOCK_EX) on `.NAME.lock`; re-entrant within one holder object."""

    def __init__(self, keyring: Path) -> None:
        self._keyring = keyring
        self._fd: int | None = None
        self._depth = 0

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self, wait_s: float, command: str) -> None:
        if self._depth:
            self._depth += 1
            return
        path = lock_path(self._keyring)
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            raise ChatsecError(
                f"cannot write keyring {self._keyring}: its lock file {path.name}: {exc.strerror}"
            ) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
                raise ChatsecError(
                    f"lock file {path} is not a regular file owned by the current user: remove it"
                )
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise ChatsecError(self._busy_message(fd, command, wait_s)) from None
                    time.sleep(_POLL_S)
            # Who holds it, for the next one to wait: pid, command, since when.
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {int(time.time())} {command}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._depth = 1
        self._remove_stale_temp_files()

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            # Closing the last descriptor drops the flock.
            os.close(self._fd)
            self._fd = None

    def _remove_stale_temp_files(self) -> None:
        # Every save writes its temporary file while holding this lock, so any one found
        # now was left by a save that was killed: it holds the keys, remove it.
        pattern = temp_file_pattern(self._keyring)
        try:
            names = os.listdir(self._keyring.parent)
        except OSError:
            return
        for name in names:
            if pattern.fullmatch(name):
                with contextlib.suppress(OSError):
                    (self._keyring.parent / name).unlink()

    def _busy_message(self, fd: int, command: str, wait_s: float) -> str:
        try:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
        except OSError:
            holder = ""
        parts = holder.split(" ", 2)
        waited = f"after waiting {wait_s:g} s" if wait_s else "without waiting"
        if len(parts) == 3 and parts[0].isdigit() and parts[1].isdigit():
            since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(int(parts[1])))
            who = f"chatsec {parts[2]} (pid {parts[0]}) holds it since {since}"
        else:
            who = "another process holds it"
        return (
            f"{command} gave up {waited} on the lock of keyring {self._keyring}: {who}; "
            "retry when it ends, or raise --wait"
        )
