"""`chatsec backup` / `chatsec restore`: no plaintext in a kept backup; restores that decrypt."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from chatsec.app import create_app_engine, user_transaction
from chatsec.app.chat import post_message
from chatsec.cli.main import cli
from chatsec.errors import ChatsecError
from chatsec.ops.backup import backup, copy_unescape, verify_dump
from chatsec.ops.restore import restore
from chatsec.sandbox import find_bindir
from tests.conftest import ChatDB
from tests.encryption_support import Chat, decrypted_contents, make_chat

KNOWN = [f"known secret text {i}" for i in range(4)]


@pytest.fixture()
def chat(deployed_db: ChatDB, tmp_path: Path) -> Chat:
    chat = make_chat(deployed_db, tmp_path / "keyring.json")
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        for text in KNOWN:
            post_message(conn, chat.thread, text)
    return chat


def _admin(db: ChatDB) -> psycopg.Connection[Any]:
    return psycopg.connect(db.admin.libpq, autocommit=True)


def _script(path: Path) -> str:
    return subprocess.run(
        [str(find_bindir() / "pg_restore"), "-f", "-", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_backup_holds_ciphertext_only(deployed_db: ChatDB, chat: Chat, tmp_path: Path) -> None:
    out = tmp_path / "chat.dump"
    result = backup(deployed_db.admin, out, chat.keyring)
    assert result.scan.messages == len(KNOWN) and result.scan.problems == []
    assert out.stat().st_mode & 0o077 == 0
    script = _script(out)
    assert "BEGIN PGP MESSAGE" in script
    assert not any(text in script for text in KNOWN)
    assert chat.keyring.active.material not in script.lower()
    with pytest.raises(ChatsecError, match="already exists"):
        backup(deployed_db.admin, out, chat.keyring)


@pytest.mark.parametrize("how", ["armor-lookalike", "plaintext"])
def test_a_plaintext_row_fails_the_backup_and_leaves_no_file(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path, how: str
) -> None:
    with _admin(deployed_db) as conn:
        if how == "plaintext":
            # What an operator would have to do to store plaintext: lift the constraint too.
            conn.execute("ALTER TABLE chat.messages DROP CONSTRAINT messages_content_encrypted")
            conn.execute("ALTER TABLE chat.messages DISABLE TRIGGER ALL")
            content = "the tampered plaintext"
        else:
            # Passes the constraint (armor prefix, a key id) with triggers off: still plaintext.
            conn.execute("SET session_replication_role = replica")
            content = "-----BEGIN PGP MESSAGE-----\nthe tampered plaintext"
        conn.execute(
            "INSERT INTO chat.messages (thread_id, user_id, content, key_id) VALUES (%s, %s, %s, %s)",
            (chat.thread, chat.alice, content, chat.keyring.active.id),
        )
    out = tmp_path / "tampered.dump"
    with pytest.raises(ChatsecError, match=r"1 of 5 row\(s\) of chat.messages .* not PGP"):
        backup(deployed_db.admin, out, chat.keyring)
    assert list(tmp_path.glob("*.dump*")) == [] and list(tmp_path.glob(".tampered*")) == []
    result = CliRunner().invoke(
        cli, ["backup", "-o", str(out), "--database-url", deployed_db.admin.libpq], env={}
    )
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "not PGP ciphertext" in lines[0]
    assert "tampered" not in result.output and not out.exists()


def test_key_material_in_the_schema_fails_the_backup(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    secret = chat.keyring.active.material
    with _admin(deployed_db) as conn:
        conn.execute(
            f"CREATE FUNCTION chat.leak() RETURNS text LANGUAGE sql AS $$ SELECT '{secret}' $$"
        )
    with pytest.raises(ChatsecError, match="secret of key .* is in the dump"):
        backup(deployed_db.admin, tmp_path / "k.dump", chat.keyring)
    # Without the keyring the key shape alone is enough.
    with pytest.raises(ChatsecError, match="key-shaped"):
        backup(deployed_db.admin, tmp_path / "k.dump")
    assert not (tmp_path / "k.dump").exists()


def test_a_login_subject_to_rls_cannot_back_up(deployed_db: ChatDB, tmp_path: Path) -> None:
    with pytest.raises(ChatsecError, match="superuser or BYPASSRLS"):
        backup(deployed_db.migrator, tmp_path / "m.dump")
    assert list(tmp_path.iterdir()) == []


def test_restore_round_trips_audits_clean_and_decrypts(
    deployed_db: ChatDB, chat: Chat, empty_db: ChatDB, tmp_path: Path
) -> None:
    out = tmp_path / "chat.dump"
    backup(deployed_db.admin, out, chat.keyring)
    report = restore(out, empty_db.migrator, empty_db.admin, empty_db.auditor, empty_db.app,
                     chat.keyring)  # fmt: skip
    assert report.at_head and report.audit_failed == []
    assert report.messages == report.decrypted == len(KNOWN) and report.ok
    # The application reads the restored chat with the keyring, under its policies.
    engine = create_app_engine(empty_db.app.libpq)
    try:
        texts = decrypted_contents(engine, chat.alice, chat.keyring, order_by="content")
        with engine.connect() as conn:  # no identity: row-level security shows nothing
            hidden = conn.execute(sa.text("SELECT count(*) FROM chat.messages")).scalar()
    finally:
        engine.dispose()
    assert texts == KNOWN and hidden == 0


def test_restore_refuses_a_non_empty_database(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    out = tmp_path / "chat.dump"
    backup(deployed_db.admin, out, chat.keyring)
    result = CliRunner().invoke(
        cli,
        ["restore", str(out), "--database-url", deployed_db.migrator.libpq,
         "--admin-url", deployed_db.admin.libpq, "--audit-url", deployed_db.auditor.libpq],
        env={},
    )  # fmt: skip
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1
    assert "is not empty" in lines[0] and "schema chat" in lines[0]


def test_copy_unescape_and_verify_rejects_garbage(tmp_path: Path) -> None:
    assert copy_unescape(r"a\nb\tc\\d\101") == "a\nb\tc\\dA"
    junk = tmp_path / "junk.dump"
    junk.write_text("not a dump")
    with pytest.raises(ChatsecError, match="not a readable pg_dump archive"):
        verify_dump(junk)
