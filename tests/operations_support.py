"""Workers that run chatsec operations in separate processes: started together, or killed
at a named moment. Spawned, not forked: a forked child would share the test's open
database connections."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Keyring
from chatsec.keys.manage import generate_key
from chatsec.keys.rotate import rotate
from chatsec.migrate import runner

SPAWN = multiprocessing.get_context("spawn")


def process_pool(workers: int = 2) -> ProcessPoolExecutor:
    """Workers spawned once and ready, so tasks handed out together start together."""
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=SPAWN)
    list(pool.map(time.sleep, [0.2] * workers))
    return pool


def _start_at(moment: float) -> None:
    while time.time() < moment:
        time.sleep(0.001)


def rotate_at(moment: float, keyring: str, url: str) -> str:
    _start_at(moment)
    try:
        result = rotate(Keyring.load(Path(keyring)), DatabaseURL.parse(url), vacuum=False)
    except ChatsecError as exc:
        return f"error {exc}"
    return f"ok {result.key_id}"


def generate_at(moment: float, keyring: str, url: str) -> str:
    _start_at(moment)
    try:
        key = generate_key(Keyring.load(Path(keyring)), DatabaseURL.parse(url))
    except ChatsecError as exc:
        return f"error {exc}"
    return f"ok {key.id}"


def deploy_at(moment: float, url: str) -> str:
    _start_at(moment)
    try:
        runner.deploy(DatabaseURL.parse(url))
    except ChatsecError as exc:
        return f"error {exc}"
    return "ok"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def rotate_killed_at(keyring: str, url: str, phase: str) -> None:
    """Rotate, and SIGKILL this process once `phase` is reached ("batch": after the first
    batch of rows is committed)."""

    def on_phase(reached: str) -> None:
        if reached == phase:
            _die()

    def on_progress(done: int, _left: int) -> None:
        if phase == "batch" and done:
            _die()

    rotate(
        Keyring.load(Path(keyring)),
        DatabaseURL.parse(url),
        batch_size=10,
        on_phase=on_phase,
        on_progress=on_progress,
    )


def generate_killed_at(keyring: str, url: str, phase: str) -> None:
    def on_phase(reached: str) -> None:
        if reached == phase:
            _die()

    generate_key(Keyring.load(Path(keyring)), DatabaseURL.parse(url), on_phase=on_phase)


def run_killed(target: Callable[..., None], *args: str) -> int:
    """Run `target(*args)` in a spawned process; its exit code (-9 when it was killed)."""
    process = SPAWN.Process(target=target, args=args)
    process.start()
    process.join(120)
    assert process.exitcode is not None, "the worker did not end"
    return process.exitcode
