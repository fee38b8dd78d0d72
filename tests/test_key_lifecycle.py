"""Retire, unretire and purge: nothing stranded, nothing changed before everything is checked."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from chatsec.app import user_transaction
from chatsec.app.chat import post_message
from chatsec.cli.main import cli
from chatsec.db.connect import connect
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Keyring
from chatsec.keys.manage import generate_key, retire_key
from tests.conftest import ChatDB
from tests.encryption_support import (
    Chat,
    copy_ciphertext_behind_the_trigger,
    keys_env,
    make_chat,
)


@pytest.fixture()
def chat(deployed_db: ChatDB, tmp_path: Path) -> Iterator[Chat]:
    made = make_chat(deployed_db, tmp_path / "keyring.json")
    yield made
    made.engine.dispose()


def _retired_at(db: ChatDB, key_id: str) -> object:
    with connect(db.admin) as conn:
        row = conn.execute(
            "SELECT retired_at FROM chat.encryption_keys WHERE id = %s", (key_id,)
        ).fetchone()
    assert row is not None
    return row[0]


def _second_key(chat: Chat, db: ChatDB) -> tuple[str, Keyring]:
    """The first key becomes previous, with no row yet; a copy of the keyring where it is
    still active stands for an application instance that has not reloaded."""
    stale = Keyring.load(chat.keyring.path)
    first = chat.keyring.active.id
    generate_key(chat.keyring, db.migrator)
    return first, stale


def test_the_active_key_is_refused_before_the_database_is_touched(
    deployed_db: ChatDB, chat: Chat
) -> None:
    active = chat.keyring.active.id
    with pytest.raises(ChatsecError, match="is the active key"):
        retire_key(chat.keyring, deployed_db.migrator, active)
    result = CliRunner().invoke(
        cli, ["keys", "retire", active], env=keys_env(deployed_db, chat.keyring.path)
    )
    assert result.exit_code == 2 and "is the active key" in result.output
    assert _retired_at(deployed_db, active) is None
    assert Keyring.load(chat.keyring.path).get(active).status == "active"


def test_retire_waits_for_a_write_in_flight_and_refuses_what_it_wrote(
    deployed_db: ChatDB, chat: Chat
) -> None:
    first, stale = _second_key(chat, deployed_db)
    outcome: list[BaseException | None] = []
    with user_transaction(chat.engine, chat.alice, stale) as conn:
        # Past the trigger's check, not committed yet.
        message = post_message(conn, chat.thread, "in flight under the first key")

        def retire() -> None:
            try:
                retire_key(chat.keyring, deployed_db.migrator, first)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        worker = threading.Thread(target=retire)
        worker.start()
        worker.join(1.0)
        assert worker.is_alive(), "retire did not wait for the write in flight"
    worker.join(30)
    assert len(outcome) == 1 and isinstance(outcome[0], ChatsecError)
    assert "still encrypts 1 message(s)" in str(outcome[0])
    # Nothing stranded: the key is not retired anywhere and the row reads.
    assert _retired_at(deployed_db, first) is None
    assert chat.keyring.get(first).status == "previous"
    with user_transaction(chat.engine, chat.bob, chat.keyring) as conn:
        text = conn.execute(
            sa.text("SELECT content FROM chat.messages_decrypted WHERE id = :id"), {"id": message}
        ).scalar_one()
    assert text == "in flight under the first key"


def test_retire_gives_up_on_a_transaction_that_stays_open(
    deployed_db: ChatDB, chat: Chat, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, stale = _second_key(chat, deployed_db)
    monkeypatch.setattr(registry, "SETTLE_TIMEOUT_S", 0.5)
    with user_transaction(chat.engine, chat.alice, stale) as conn:
        post_message(conn, chat.thread, "a long transaction")
        with pytest.raises(ChatsecError, match="transactions open for more than 0.5 s"):
            retire_key(chat.keyring, deployed_db.migrator, first)
    assert _retired_at(deployed_db, first) is None


def test_after_retire_a_write_under_the_key_is_refused(deployed_db: ChatDB, chat: Chat) -> None:
    first, stale = _second_key(chat, deployed_db)
    retire_key(chat.keyring, deployed_db.migrator, first)
    assert _retired_at(deployed_db, first) is not None
    with pytest.raises(sa.exc.DBAPIError, match="is retired"):  # noqa: SIM117
        with user_transaction(chat.engine, chat.alice, stale) as conn:
            post_message(conn, chat.thread, "too late")


def test_unretire_brings_a_retired_key_back_while_the_keyring_has_it(
    deployed_db: ChatDB, chat: Chat
) -> None:
    first, _ = _second_key(chat, deployed_db)
    env = keys_env(deployed_db, chat.keyring.path)
    assert CliRunner().invoke(cli, ["keys", "retire", first], env=env).exit_code == 0
    result = CliRunner().invoke(cli, ["keys", "unretire", first], env=env)
    assert result.exit_code == 0, result.output
    assert _retired_at(deployed_db, first) is None
    assert Keyring.load(chat.keyring.path).get(first).status == "previous"
    again = CliRunner().invoke(cli, ["keys", "unretire", first], env=env)
    assert again.exit_code == 2 and "not retired" in again.output


def test_purge_destroys_a_retired_key_after_confirmation(deployed_db: ChatDB, chat: Chat) -> None:
    first, _ = _second_key(chat, deployed_db)
    env = keys_env(deployed_db, chat.keyring.path)
    refused = CliRunner().invoke(cli, ["keys", "purge", first, "--yes"], env=env)
    assert refused.exit_code == 2 and "only a retired key is purged" in refused.output
    assert CliRunner().invoke(cli, ["keys", "retire", first], env=env).exit_code == 0
    declined = CliRunner().invoke(cli, ["keys", "purge", first], env=env, input="n\n")
    assert declined.exit_code == 1
    assert Keyring.load(chat.keyring.path).get(first).status == "retired"
    done = CliRunner().invoke(cli, ["keys", "purge", first], env=env, input="y\n")
    assert done.exit_code == 0, done.output
    purged = Keyring.load(chat.keyring.path).get(first)
    assert purged.status == "purged"
    with pytest.raises(ChatsecError):
        _ = purged.material
    with connect(deployed_db.admin) as conn:
        row = conn.execute(
            "SELECT purged_at IS NOT NULL FROM chat.encryption_keys WHERE id = %s", (first,)
        ).fetchone()
    assert row == (True,)
    back = CliRunner().invoke(cli, ["keys", "unretire", first], env=env)
    assert back.exit_code == 2


def test_rotate_warns_about_rows_that_were_plaintext(deployed_db: ChatDB, chat: Chat) -> None:
    # A row as it was before revision 0003: plaintext, no key id (the CHECK is NOT VALID,
    # so older rows are allowed; it is set aside for the insert and put back).
    check = (
        "ALTER TABLE chat.messages ADD CONSTRAINT messages_content_encrypted "
        "CHECK (key_id IS NOT NULL AND content LIKE '-----BEGIN PGP MESSAGE-----%') NOT VALID"
    )
    with connect(deployed_db.admin) as conn:
        conn.execute("ALTER TABLE chat.messages DROP CONSTRAINT messages_content_encrypted")
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO chat.messages (id, thread_id, user_id, content) VALUES (%s, %s, %s, %s)",
            (uuid.uuid4(), chat.thread, chat.alice, "from before encryption"),
        )
        conn.execute(check)
        conn.commit()
    with connect(deployed_db.admin) as conn:
        before = conn.execute("SELECT pg_relation_filenode('chat.messages')").fetchone()
    result = CliRunner().invoke(
        cli, ["keys", "rotate", "--no-vacuum"], env=keys_env(deployed_db, chat.keyring.path)
    )
    assert result.exit_code == 0, result.output
    assert "1 row(s) held plaintext from before encryption" in result.stderr
    assert "rerun with --vacuum-full" in result.stderr and "WAL archives" in result.stderr
    with connect(deployed_db.admin) as conn:
        assert conn.execute("SELECT pg_relation_filenode('chat.messages')").fetchone() == before
    # The way out of the heap: the table rewritten into a new file.
    full = CliRunner().invoke(
        cli, ["keys", "rotate", "--vacuum-full"], env=keys_env(deployed_db, chat.keyring.path)
    )
    assert full.exit_code == 0, full.output
    assert "VACUUM FULL" in full.stdout
    with connect(deployed_db.admin) as conn:
        assert conn.execute("SELECT pg_relation_filenode('chat.messages')").fetchone() != before


def test_rotate_lists_rows_it_cannot_decrypt_and_exits_1(deployed_db: ChatDB, chat: Chat) -> None:
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        good = post_message(conn, chat.thread, "fine")
        bad = post_message(conn, chat.thread, "corrupted")
    copy_ciphertext_behind_the_trigger(deployed_db, good, bad)
    result = CliRunner().invoke(
        cli, ["keys", "rotate", "--no-vacuum"], env=keys_env(deployed_db, chat.keyring.path)
    )
    assert result.exit_code == 1
    assert f"1 row(s) could not be decrypted and stay under their key: {bad}" in result.stdout


def test_an_older_copy_of_the_keyring_is_refused_before_anything_changes(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    copy = tmp_path / "copy.json"
    copy.write_bytes(chat.keyring.path.read_bytes())
    copy.chmod(0o600)
    generate_key(chat.keyring, deployed_db.migrator)  # the newest keyring moves on
    old = Keyring.load(copy)
    assert old.generation < chat.keyring.generation
    with connect(deployed_db.admin) as conn:
        keys_before = conn.execute("SELECT count(*) FROM chat.encryption_keys").fetchone()
    with pytest.raises(ChatsecError, match="older than generation"):
        generate_key(old, deployed_db.migrator)
    result = CliRunner().invoke(cli, ["keys", "generate"], env=keys_env(deployed_db, copy))
    assert result.exit_code == 2 and "older than generation" in result.output
    # A fresh keyring for a database that already has keys: the keyring was lost.
    fresh = CliRunner().invoke(
        cli, ["keys", "generate"], env=keys_env(deployed_db, tmp_path / "fresh.json")
    )
    assert fresh.exit_code == 2 and "a new key cannot decrypt any of them" in fresh.output
    assert not (tmp_path / "fresh.json").exists()
    with connect(deployed_db.admin) as conn:
        assert conn.execute("SELECT count(*) FROM chat.encryption_keys").fetchone() == keys_before
    assert Keyring.load(copy).generation == old.generation


def test_keys_seal_seals_an_unsealed_keyring_with_a_strong_passphrase(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    keyring = Keyring.empty(path)
    keyring.generate()
    keyring.save()
    env = {"CHATSEC_KEYRING": str(path)}
    missing = CliRunner().invoke(cli, ["keys", "seal"], env=env)
    assert missing.exit_code == 2 and "CHATSEC_KEYRING_PASSPHRASE" in missing.output
    weak = CliRunner().invoke(
        cli, ["keys", "seal"], env={**env, "CHATSEC_KEYRING_PASSPHRASE": "password1234"}
    )
    assert weak.exit_code == 2 and "password1234" not in weak.output
    assert not Keyring.load(path).sealed
    strong = "correct horse battery staple 7b9f"
    done = CliRunner().invoke(
        cli, ["keys", "seal"], env={**env, "CHATSEC_KEYRING_PASSPHRASE": strong}
    )
    assert done.exit_code == 0, done.output
    with pytest.raises(ChatsecError, match="is sealed"):
        Keyring.load(path)
    assert Keyring.load(path, strong).sealed
