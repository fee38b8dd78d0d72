"""`chatsec keys`: generate, status, online rotation (concurrent app, SIGKILL + resume), retire."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from chatsec.app import user_transaction
from chatsec.app.chat import post_message
from chatsec.cli.main import cli
from chatsec.keys import registry
from chatsec.keys.keyring import Keyring
from chatsec.keys.manage import generate_key
from tests.conftest import ChatDB
from tests.encryption_support import Chat, decrypted_contents, insert_many, keys_env, make_chat


@pytest.fixture()
def chat(deployed_db: ChatDB, tmp_path: Path) -> Iterator[Chat]:
    made = make_chat(deployed_db, tmp_path / "keyring.json")
    yield made
    made.engine.dispose()


def _counts(db: ChatDB) -> dict[str | None, int]:
    with registry.acting_as(db.migrator, registry.ROTATOR) as conn:
        return registry.rows_per_key(conn)


def _all_readable(chat: Chat, keyring: Keyring) -> list[str]:
    return decrypted_contents(chat.engine, chat.alice, keyring)


def test_generate_writes_private_keyring_and_status(deployed_db: ChatDB, tmp_path: Path) -> None:
    path = tmp_path / "ring.json"
    runner = CliRunner()
    result = runner.invoke(cli, ["keys", "generate"], env=keys_env(deployed_db, path))
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    key = Keyring.load(path).active
    assert f"registered {key.id}" in result.output
    status = runner.invoke(cli, ["keys", "status"], env=keys_env(deployed_db, path))
    assert status.exit_code == 0, status.output
    assert key.id in status.output
    path.chmod(0o644)
    refused = runner.invoke(cli, ["keys", "status"], env=keys_env(deployed_db, path))
    assert refused.exit_code == 2
    assert "readable by others" in refused.output


def test_rotation_online_with_concurrent_app(chat: Chat, deployed_db: ChatDB) -> None:
    insert_many(chat, 2000)
    stale = Keyring.load(chat.keyring.path)  # an app instance that has not reloaded yet
    generate_key(chat.keyring, deployed_db.migrator)  # step 1: new key, handed to the app
    old_id = stale.active.id
    stop = threading.Event()
    errors: list[BaseException] = []
    written: list[str] = []

    refused: list[str] = []

    def app_traffic() -> None:
        try:
            i = 0
            while not stop.is_set():
                current = Keyring.load(chat.keyring.path)
                writer = stale if i % 3 == 0 else current  # some writes still under the old key
                try:
                    with user_transaction(chat.engine, chat.alice, writer) as conn:
                        post_message(conn, chat.thread, f"live {i}")
                    written.append(f"live {i}")
                except sa.exc.DBAPIError as exc:
                    # Once the rotation is over the old key is drained: a stale instance
                    # is refused, loudly, instead of writing rows the next rotation redoes.
                    if writer is not stale or "was rotated out" not in str(exc.orig):
                        raise
                    refused.append(f"live {i}")
                with user_transaction(chat.engine, chat.bob, current) as conn:
                    conn.execute(sa.text(
                        "SELECT content FROM chat.messages_decrypted ORDER BY created_at DESC "
                        "LIMIT 20")).all()
                i += 1
                time.sleep(0.01)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    worker = threading.Thread(target=app_traffic)
    worker.start()
    try:
        time.sleep(0.2)
        result = CliRunner().invoke(
            cli, ["keys", "rotate", "--batch-size", "100", "--no-vacuum"],
            env=keys_env(deployed_db, chat.keyring.path),
        )
        # A little traffic after the end: stale writes are now refused.
        time.sleep(0.3)
    finally:
        stop.set()
        worker.join(timeout=30)
    assert not errors, errors
    assert result.exit_code == 0, result.output
    assert refused, "a stale instance kept writing under the rotated-out key"
    keyring = Keyring.load(chat.keyring.path)
    counts = _counts(deployed_db)
    assert set(counts) == {keyring.active.id}
    assert counts[keyring.active.id] == 2000 + len(written)
    assert old_id != keyring.active.id
    texts = _all_readable(chat, keyring)
    assert len(texts) == 2000 + len(written)
    assert set(written) <= set(texts)
    assert not set(refused) & set(texts)


def test_rotation_killed_midway_resumes(chat: Chat, deployed_db: ChatDB) -> None:
    insert_many(chat, 2000)
    before = set(_all_readable(chat, chat.keyring))
    new = generate_key(chat.keyring, deployed_db.migrator)
    env = {**os.environ, **keys_env(deployed_db, chat.keyring.path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatsec", "keys", "rotate", "--batch-size", "20", "--no-vacuum"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while _counts(deployed_db).get(new.id, 0) < 100:
            assert proc.poll() is None, "rotation finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    midway = _counts(deployed_db)
    assert midway.get(new.id, 0) < 2000, "nothing left to resume"
    result = CliRunner().invoke(cli, ["keys", "rotate", "--batch-size", "500"],
                                env=keys_env(deployed_db, chat.keyring.path))
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output
    assert _counts(deployed_db) == {new.id: 2000}
    assert set(_all_readable(chat, Keyring.load(chat.keyring.path))) == before


def test_retire_refuses_while_used(chat: Chat, deployed_db: ChatDB) -> None:
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        post_message(conn, chat.thread, "still under the first key")
    first = chat.keyring.active.id
    generate_key(chat.keyring, deployed_db.migrator)
    env = keys_env(deployed_db, chat.keyring.path)
    refused = CliRunner().invoke(cli, ["keys", "retire", first], env=env)
    assert refused.exit_code == 2
    assert "still encrypts 1 message(s)" in refused.output
    assert Keyring.load(chat.keyring.path).get(first).status == "previous"
    assert CliRunner().invoke(cli, ["keys", "rotate", "--no-vacuum"], env=env).exit_code == 0
    done = CliRunner().invoke(cli, ["keys", "retire", first], env=env)
    assert done.exit_code == 0, done.output
    assert Keyring.load(chat.keyring.path).get(first).status == "retired"
    # The trigger refuses a retired key even with the right key material.
    with pytest.raises(sa.exc.DBAPIError, match="is retired"):  # noqa: SIM117
        with user_transaction(chat.engine, chat.alice) as conn:
            key = chat.keyring.get(first)
            conn.execute(sa.text("SELECT set_config('app.encryption_key', :k, true), "
                                 "set_config('app.encryption_key_id', :i, true)"),
                         {"k": key.material, "i": key.id})
            post_message(conn, chat.thread, "under a retired key")
