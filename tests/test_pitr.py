"""Point-in-time recovery drill: base backup, writes, a noted time, more writes, recover to it."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from chatsec.app import create_app_engine, user_transaction
from chatsec.app.chat import post_message
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.migrate import runner
from chatsec.ops.pitr import parse_target_time, recover
from chatsec.sandbox import Sandbox
from tests.conftest import ChatDB, register_identity, scratch_sandbox
from tests.encryption_support import Chat, decrypted_contents, make_chat

ARMOR = "-----BEGIN PGP MESSAGE-----"


@pytest.fixture()
def archiving() -> Iterator[Sandbox]:
    yield from scratch_sandbox("chatsec-pitr-src-", archive=True)


@pytest.fixture()
def recovered_dir() -> Iterator[Path]:
    parent = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="chatsec-pitr-new-"))
    parent.chmod(0o711)  # the postgres server user must traverse it
    # Not created here: the recovery refuses a directory that already holds a sandbox.
    path = parent / "recovered"
    try:
        yield path
    finally:
        if path.exists():
            Sandbox(path).stop()
        shutil.rmtree(parent, ignore_errors=True)


def _post(chat: Chat, texts: list[str]) -> None:
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        for text in texts:
            post_message(conn, chat.thread, text)


def _server_now(box: Sandbox) -> datetime:
    with box.admin_connect() as conn:
        row = conn.execute("SELECT pg_catalog.clock_timestamp()").fetchone()
    assert row is not None and isinstance(row[0], datetime)
    return row[0]


def test_recovery_to_a_time_finds_exactly_the_earlier_messages_still_encrypted(
    archiving: Sandbox, recovered_dir: Path, tmp_path: Path
) -> None:
    db = ChatDB("chat", archiving)
    runner.deploy(db.migrator)
    register_identity(db.migrator)
    base = archiving.base_backup(archiving.directory / "base")
    chat = make_chat(db, tmp_path / "keyring.json")
    first = [f"before the target {i}" for i in range(3)]
    _post(chat, first)
    time.sleep(0.3)
    target = _server_now(archiving)
    time.sleep(0.3)
    _post(chat, ["after the target 1", "after the target 2"])
    chat.engine.dispose()
    with archiving.admin_connect() as conn:
        row = conn.execute(
            "SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal())"
        ).fetchone()
    assert row is not None
    segment = archiving.archive_dir / str(row[0])
    deadline = time.monotonic() + 30
    while not segment.exists():
        assert time.monotonic() < deadline, "the switched WAL segment was never archived"
        time.sleep(0.1)

    result = recover(base, target.isoformat(), recovered_dir, archiving.directory)
    assert result.recovered_to is not None and result.recovered_to <= target

    new = Sandbox(recovered_dir)
    assert new.port != archiving.port
    # The same passwords and CA work: the recovered cluster is the source's at that time.
    with new.admin_connect() as conn:
        rows = conn.execute("SELECT content, key_id FROM chat.messages").fetchall()
    assert len(rows) == len(first)
    assert all(str(c).startswith(ARMOR) and k is not None for c, k in rows)
    assert not any("target" in str(c) for c, _ in rows)
    engine = create_app_engine(new.url_for("app"))
    try:
        texts = decrypted_contents(engine, chat.alice, chat.keyring, order_by="content")
    finally:
        engine.dispose()
    assert texts == first
    # Read-write after promotion, as recovery_target_action = promote promises.
    with new.admin_connect() as conn:
        row = conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()
    assert row is not None and row[0] is False
    assert DatabaseURL.parse(new.url_for("app")).port == new.port


def test_target_time_needs_a_zone_and_a_fresh_directory(sandbox: Sandbox, tmp_path: Path) -> None:
    with pytest.raises(ChatsecError, match="no time zone"):
        parse_target_time("2026-11-25 10:00:00")
    with pytest.raises(ChatsecError, match="bad --target-time"):
        parse_target_time("yesterday")
    with pytest.raises(ChatsecError, match="new directory"):
        recover(tmp_path, "2026-11-25T10:00:00+00:00", sandbox.directory, sandbox.directory)


def test_base_backup_needs_archiving(sandbox: Sandbox) -> None:
    with pytest.raises(ChatsecError, match="without WAL archiving"):
        sandbox.base_backup(sandbox.directory / "never")
    assert not (sandbox.directory / "never").exists()
