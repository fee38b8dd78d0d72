"""`chatsec backup` / `chatsec restore`: no plaintext in a kept backup; restores that decrypt."""

from __future__ import annotations

import base64
import json
import re
import secrets
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from chatsec.app import create_app_engine, user_transaction
from chatsec.app.chat import post_message
from chatsec.cli.main import cli
from chatsec.db.connect import connect
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Keyring
from chatsec.keys.manage import generate_key
from chatsec.ops.backup import backup, dump_to, restore_dump
from chatsec.ops.dumpscan import DumpScan, copy_unescape, verify_dump
from chatsec.ops.restore import restore
from chatsec.policy.load import load_policies
from chatsec.sandbox import binaries, find_bindir
from tests.conftest import ChatDB, identity_token, register_identity
from tests.encryption_support import Chat, decrypted_contents, make_chat, post_all

KNOWN = [f"known secret text {i}" for i in range(4)]
TRIGGER_OPTIONS = "cipher-algo=aes256, s2k-mode=1"  # what chat.encrypt_message() passes
# pgcrypto's ciphertext of %s under key %s with options %s, armored with Chatsec-Key %s.
ENCRYPTED = (
    "extensions.armor(extensions.pgp_sym_encrypt(%s, %s, %s), ARRAY['Chatsec-Key'], ARRAY[%s])"
)


@pytest.fixture()
def chat(deployed_db: ChatDB, tmp_path: Path) -> Chat:
    return post_all(make_chat(deployed_db, tmp_path / "keyring.json"), KNOWN)


def _admin(db: ChatDB) -> psycopg.Connection[Any]:
    return psycopg.connect(db.admin.libpq, autocommit=True)


def _dump(db: ChatDB, path: Path) -> Path:
    dump_to(db.admin, path)
    return path


def _insert_raw(db: ChatDB, chat: Chat, content_sql: str, *params: object) -> str:
    """A chat.messages row whose content `content_sql` computes, past the encryption trigger.

    The CHECK constraint still applies: the content must start like armor.
    """
    with _admin(db) as conn:
        conn.execute("SET session_replication_role = replica")
        row = conn.execute(
            "INSERT INTO chat.messages (thread_id, user_id, content, key_id) "
            f"VALUES (%s, %s, {content_sql}, %s) RETURNING id::text",
            (chat.thread, chat.alice, *params, chat.keyring.active.id),
        ).fetchone()
    assert row is not None
    return str(row[0])


def _last_message_id(path: Path) -> str:
    script = _script(path)
    rows = script.split("COPY chat.messages (", 1)[1].split("\n\\.\n", 1)[0].split("\n")[1:]
    return rows[-1].split("\t", 1)[0]


def _one_line(scan: DumpScan) -> str:
    return "\n".join(scan.problems)


def _script(path: Path) -> str:
    return subprocess.run(
        [str(find_bindir() / "pg_restore"), "-f", "-", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip


def test_backup_holds_ciphertext_only(deployed_db: ChatDB, chat: Chat, tmp_path: Path) -> None:
    out = tmp_path / "chat.dump"
    result = backup(deployed_db.admin, out, chat.keyring)
    assert result.scan.messages == result.scan.decrypted == len(KNOWN)
    assert result.scan.problems == [] and result.scan.unchecked == []
    assert out.stat().st_mode & 0o077 == 0
    script = _script(out)
    assert "BEGIN PGP MESSAGE" in script
    assert not any(text in script for text in KNOWN)
    assert chat.keyring.active.material not in script.lower()
    # Nor the identity keys: whoever holds a backup cannot sign identities.
    assert "identity_keys" in script
    with deployed_db.sandbox.admin_connect(deployed_db.name) as conn:
        secrets = [bytes(r[0]).hex() for r in conn.execute("SELECT secret FROM chat.identity_keys")]
    assert secrets and not any(secret in script.lower() for secret in secrets)
    assert "chat.identity_keys" not in result.manifest.row_counts
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
        cli, ["backup", "-o", str(out), "--database-url", deployed_db.admin.libpq,
              "--keyring", str(chat.keyring.path)], env={},
    )  # fmt: skip
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "not PGP ciphertext" in lines[0]
    assert not out.with_name(out.name + ".manifest.json").exists()
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
    assert not (tmp_path / "k.dump").exists()
    # Without the keyring (a restore without one) the key shape alone is enough.
    scan = verify_dump(_dump(deployed_db, tmp_path / "raw.dump"))
    assert any("key-shaped" in problem for problem in scan.problems), scan.problems


def test_a_login_subject_to_rls_cannot_back_up(deployed_db: ChatDB, tmp_path: Path) -> None:
    keyring = Keyring.empty(tmp_path / "never-saved.keyring")
    keyring.generate()
    with pytest.raises(ChatsecError, match="superuser or BYPASSRLS"):
        backup(deployed_db.migrator, tmp_path / "m.dump", keyring)
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
    # The backup held no identity key: the restored database verifies none until the
    # identity keyring's keys are registered again.
    with connect(empty_db.app) as conn:
        conn.execute("SELECT set_config('app.identity', %s, true)", (identity_token(chat.alice),))
        assert conn.execute("SELECT chat.current_user_id()").fetchone() == (None,)
    register_identity(empty_db.migrator)
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
         "--admin-url", deployed_db.admin.libpq, "--audit-url", deployed_db.auditor.libpq,
         "--keyring", str(chat.keyring.path)],
        env={},
    )  # fmt: skip
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1
    assert "is not empty" in lines[0] and "schema chat" in lines[0]


def test_restore_create_makes_the_locked_down_target_itself(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    out = tmp_path / "chat.dump"
    backup(deployed_db.admin, out, chat.keyring)
    name = f"restored_{deployed_db.name}"
    target = deployed_db.migrator.with_database(name)
    args = ["restore", str(out), "--create", "--database-url", target.libpq,
            "--admin-url", deployed_db.admin.with_database(name).libpq,
            "--audit-url", deployed_db.auditor.with_database(name).libpq,
            "--keyring", str(chat.keyring.path)]  # fmt: skip
    try:
        result = CliRunner().invoke(cli, args, env={})
        assert result.exit_code == 0, result.output
        assert f"created database {name} owned by {target.user}, locked down" in result.output
        with deployed_db.sandbox.admin_connect(name) as conn:
            owner, acl = conn.execute(
                "SELECT pg_get_userbyid(datdba), datacl::text FROM pg_database "
                "WHERE datname = current_database()"
            ).fetchone() or (None, None)
            lo_open = conn.execute(
                "SELECT has_function_privilege('public', 'lo_create(oid)', 'EXECUTE')"
            ).fetchone()
        assert owner == target.user
        assert "app_user=c/" in str(acl) and "chat_auditor=Tc/" in str(acl)
        assert "=Tc/" not in str(acl).replace("chat_auditor=Tc/", "")  # nothing for PUBLIC
        assert lo_open == (False,)
        again = CliRunner().invoke(cli, args, env={})
        assert again.exit_code == 2
        assert f"database {name} exists already" in again.output
    finally:
        deployed_db.sandbox.drop_database(name)


def test_copy_unescape_and_verify_rejects_garbage(tmp_path: Path) -> None:
    assert copy_unescape(r"a\nb\tc\\d\101") == "a\nb\tc\\dA"
    junk = tmp_path / "junk.dump"
    junk.write_text("not a dump")
    with pytest.raises(ChatsecError, match="not a readable pg_dump archive"):
        verify_dump(junk)


def test_without_a_keyring_the_scan_says_what_it_could_not_check(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    scan = verify_dump(_dump(deployed_db, tmp_path / "chat.dump"))
    assert scan.problems == [] and scan.decrypted is None and scan.messages == len(KNOWN)
    assert [reason.split(":")[0] for reason in scan.unchecked] == [
        "decryption", "plaintext elsewhere", "key material"
    ]  # fmt: skip
    # A backup is never taken unproven: without the keyring it refuses, in one line.
    result = CliRunner().invoke(
        cli, ["backup", "-o", str(tmp_path / "b.dump"), "--database-url", deployed_db.admin.libpq],
        env={"CHATSEC_KEYRING": None},
    )  # fmt: skip
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "needs the keyring (--keyring PATH or $CHATSEC_KEYRING)" in result.output
    assert not (tmp_path / "b.dump").exists()
    with_keyring = CliRunner().invoke(
        cli, ["backup", "-o", str(tmp_path / "k.dump"), "--database-url", deployed_db.admin.libpq,
              "--keyring", str(chat.keyring.path)],
        env={"CHATSEC_KEYRING": None},
    )  # fmt: skip
    assert with_keyring.exit_code == 0, with_keyring.output
    assert "4 message(s) decrypt with the keyring" in with_keyring.output
    assert "NOT checked" not in with_keyring.output


def _literal_packet(text: bytes) -> bytes:
    # OpenPGP literal data (new-format tag 11): plaintext in packet clothing.
    body = b"t\x00\x00\x00\x00\x00" + text
    return bytes([0xC0 | 11, len(body)]) + body


def _compressed_packet(text: bytes) -> bytes:
    # OpenPGP compressed data (new-format tag 8, algorithm 1: raw deflate), not encrypted.
    deflate = zlib.compressobj(wbits=-15)
    body = b"\x01" + deflate.compress(_literal_packet(text)) + deflate.flush()
    return bytes([0xC0 | 8, len(body)]) + body


# name -> (content SQL, its parameters given the key material and id, the problem with the
# keyring, the problem without one (None: it cannot be seen without the key)).
NOT_CIPHERTEXT = r"1 of 5 row\(s\) of chat.messages hold content that is not PGP ciphertext: "
BadRow = tuple[str, Callable[[str, str], tuple[object, ...]], str, str | None]
BAD_ROWS: dict[str, BadRow] = {
    "compressed-unencrypted": (
        "extensions.armor(%s::bytea, ARRAY['Chatsec-Key'], ARRAY[%s])",
        lambda m, k: (_compressed_packet(b"squeezed but readable"), k),
        NOT_CIPHERTEXT + r"OpenPGP compressed data \(8\) instead of an encrypted message",
        NOT_CIPHERTEXT + r"OpenPGP compressed data \(8\)",
    ),
    "compressed": (
        ENCRYPTED,
        lambda m, k: ("compressed words " * 8, m, f"{TRIGGER_OPTIONS}, compress-algo=1", k),
        r"1 of 5 row\(s\) of chat.messages decrypt but are not what the trigger writes: "
        r"compressed inside the encryption",
        None,
    ),
    "literal-data": (
        "extensions.armor(%s::bytea, ARRAY['Chatsec-Key'], ARRAY[%s])",
        lambda m, k: (_literal_packet(b"hello in the clear"), k),
        NOT_CIPHERTEXT + r"OpenPGP literal data \(11\) instead of an encrypted message",
        NOT_CIPHERTEXT + r"OpenPGP literal data \(11\)",
    ),
    "not-openpgp": (
        "extensions.armor(pg_catalog.convert_to(%s, 'UTF8'), ARRAY['Chatsec-Key'], ARRAY[%s])",
        lambda m, k: ("plain words, armored", k),
        NOT_CIPHERTEXT + "not OpenPGP packets",
        NOT_CIPHERTEXT + "not OpenPGP packets",
    ),
    "no-integrity-protection": (
        ENCRYPTED,
        lambda m, k: ("no MDC here", m, f"{TRIGGER_OPTIONS}, disable-mdc=1", k),
        NOT_CIPHERTEXT + r".*without integrity protection \(9\)",
        NOT_CIPHERTEXT + r".*without integrity protection \(9\)",
    ),
    "bad-checksum": (
        f"pg_catalog.regexp_replace({ENCRYPTED}, E'\\n=[A-Za-z0-9+/]{{4}}\\n', E'\\n=AAAA\\n')",
        lambda m, k: ("checksummed", m, TRIGGER_OPTIONS, k),
        NOT_CIPHERTEXT + r"ASCII armor checksum \(CRC-24\) does not match",
        NOT_CIPHERTEXT + r"ASCII armor checksum \(CRC-24\) does not match",
    ),
    "extra-armor-header": (
        "extensions.armor(extensions.pgp_sym_encrypt(%s, %s, %s), "
        "ARRAY['Chatsec-Key', 'Comment'], ARRAY[%s, 'a note in the clear'])",
        lambda m, k: ("headed", m, TRIGGER_OPTIONS, k),
        NOT_CIPHERTEXT + "ASCII armor headers other than one Chatsec-Key",
        NOT_CIPHERTEXT + "ASCII armor headers other than one Chatsec-Key",
    ),
    "wrong-key": (
        ENCRYPTED,
        lambda m, k: ("under another key", secrets.token_hex(32), TRIGGER_OPTIONS, k),
        r"1 of 5 row\(s\) of chat.messages do not decrypt with the keyring: wrong key or "
        r"corrupt data \(integrity check failed\)",
        None,
    ),
    "unknown-key": (
        ENCRYPTED,
        lambda m, k: ("under an unknown id", m, TRIGGER_OPTIONS, "k-not-in-the-keyring"),
        r"1 of 5 row\(s\) of chat.messages do not decrypt with the keyring: they name key "
        r"k-not-in-the-keyring, which the keyring does not have",
        None,
    ),
}


@pytest.mark.parametrize("case", list(BAD_ROWS))
def test_a_row_that_is_not_proven_ciphertext_fails_the_scan(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path, case: str
) -> None:
    content_sql, params, with_keyring, without_keyring = BAD_ROWS[case]
    key = chat.keyring.active
    message_id = _insert_raw(deployed_db, chat, content_sql, *params(key.material, key.id))
    dump = _dump(deployed_db, tmp_path / "chat.dump")
    assert _last_message_id(dump) == message_id  # the boundary: the very last row
    scan = verify_dump(dump, chat.keyring)
    assert len(scan.problems) == 1, scan.problems
    assert re.match(with_keyring, scan.problems[0]) and message_id in scan.problems[0]
    assert scan.decrypted == len(KNOWN)
    blind = verify_dump(dump)
    if without_keyring is None:
        # Undetectable without the key (that is what encryption is); and said so.
        assert blind.problems == [] and blind.unchecked[0].startswith("decryption: 5 message(s)")
    else:
        assert len(blind.problems) == 1 and re.match(without_keyring, blind.problems[0])


def test_a_null_content_and_an_empty_chat_are_not_findings(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    with _admin(deployed_db) as conn:
        conn.execute("ALTER TABLE chat.messages ALTER COLUMN content DROP NOT NULL")
        conn.execute("ALTER TABLE chat.messages DROP CONSTRAINT messages_content_encrypted")
    _insert_raw(deployed_db, chat, "NULL")
    scan = verify_dump(_dump(deployed_db, tmp_path / "null.dump"), chat.keyring)
    assert scan.problems == [] and scan.messages == 5 and scan.decrypted == len(KNOWN)
    with _admin(deployed_db) as conn:
        conn.execute("DELETE FROM chat.messages")
    empty = verify_dump(_dump(deployed_db, tmp_path / "empty.dump"), chat.keyring)
    assert empty.problems == [] and empty.messages == empty.decrypted == 0
    assert "chat.messages" in empty.tables and empty.unchecked == []


def test_key_material_in_any_encoding_and_place_fails_the_scan(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    # A key whose base64 has a '+' or '/': otherwise its base64url is the same string,
    # and the scan rightly reports the messages' copy as base64 too (1 key in 4).
    while not {"+", "/"} & set(base64.b64encode(chat.keyring.active.secret or b"").decode()):
        generate_key(chat.keyring, deployed_db.migrator)
    secret = chat.keyring.active.secret
    assert secret is not None
    hex_upper = secret.hex().upper()
    standard = base64.b64encode(secret).decode()
    urlsafe = base64.urlsafe_b64encode(secret).decode().rstrip("=")
    # JSON-escaped: the first character as \uXXXX, every '/' as '\/'.
    json_escaped = f"\\u{ord(standard[0]):04x}" + standard[1:].replace("/", "\\/")
    with _admin(deployed_db) as conn:
        conn.execute("SET session_replication_role = replica")
        # Row data: base64 split across a line break; base64url in JSON, split by an
        # escaped newline; JSON-escaped base64 in a third table.
        conn.execute(
            "UPDATE chat.users SET first_name = %s WHERE id = %s",
            (standard[:20] + "\n" + standard[20:], chat.alice),
        )
        conn.execute(
            "UPDATE chat.messages SET metadata = %s::jsonb",
            (json.dumps({"note": urlsafe[:30] + "\n" + urlsafe[30:]}),),
        )
        conn.execute("UPDATE chat.threads SET name = %s", (json_escaped,))
        # Schema text: upper-case hex in groups of eight, over two lines of a comment.
        groups = " ".join(hex_upper[i : i + 8] for i in range(0, 64, 8))
        conn.execute(
            "COMMENT ON TABLE chat.attachments IS "
            + psycopg.sql.quote(groups[:40] + "\n" + groups[40:])
        )
    scan = verify_dump(_dump(deployed_db, tmp_path / "keys.dump"), chat.keyring)
    found = _one_line(scan)
    key_id = chat.keyring.active.id
    assert f"the secret of key {key_id} is in the dump (hex) in the schema text" in found
    assert re.search(rf"key {key_id} is in the dump \(base64\) in chat.threads data .*"
                     r"chat.users data", found)  # fmt: skip
    assert re.search(rf"key {key_id} is in the dump \(base64url\) in chat.messages data", found)
    # Without the keyring none of this is key-shaped in the schema: row data is not
    # scanned by shape, and the comment's hex is split.
    assert verify_dump(tmp_path / "keys.dump").problems == []


def test_key_shaped_base64_in_the_schema_fails_the_scan_without_a_keyring(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    stray = secrets.token_bytes(32)  # in no keyring: only its shape gives it away
    with _admin(deployed_db) as conn:
        conn.execute(
            "COMMENT ON TABLE chat.threads IS "
            + psycopg.sql.quote("rotate with " + base64.b64encode(stray).decode())
        )
        conn.execute(
            "CREATE FUNCTION chat.leak() RETURNS text LANGUAGE sql AS $$ SELECT '"
            + base64.urlsafe_b64encode(stray).decode().rstrip("=")
            + "' $$"
        )
    scan = verify_dump(_dump(deployed_db, tmp_path / "shape.dump"))
    shaped = [p for p in scan.problems if "32-byte base64 (key-shaped) value" in p]
    assert len(shaped) == 2 and len(scan.problems) == 2, scan.problems


def test_message_text_outside_its_ciphertext_fails_the_scan(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    quoted = 'don\'t tell: "launch"\nat dawn'
    drafted = "a draft kept in a large object"
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        quoted_id = str(post_message(conn, chat.thread, quoted))
        drafted_id = str(post_message(conn, chat.thread, drafted))
        post_message(conn, chat.thread, "ok then")  # 7 characters: too short to count
        post_message(conn, chat.thread, "PostgreSQL database dump complete")  # boilerplate
    key = chat.keyring.active
    # A row the way the row-binding trigger writes it: a frame, then the text.
    framed_text = "framed secret words"
    frame = f"\x01chatsec/2 {secrets.token_hex(4)} {chat.thread}\x01"
    framed_id = _insert_raw(deployed_db, chat, ENCRYPTED, frame + framed_text, key.material,
                            TRIGGER_OPTIONS, key.id)  # fmt: skip
    with _admin(deployed_db) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "UPDATE chat.messages SET metadata = %s::jsonb WHERE id = %s",
            (json.dumps({"preview": quoted, "also": framed_text}), framed_id),
        )
        conn.execute("UPDATE chat.threads SET name = 'ok then'")
        conn.execute("COMMENT ON TABLE chat.threads IS " + psycopg.sql.quote("see: " + quoted))
        conn.execute(
            "SELECT pg_catalog.lo_from_bytea(0, pg_catalog.convert_to(%s, 'UTF8'))",
            ("draft: " + drafted,),
        )
    dump = _dump(deployed_db, tmp_path / "leak.dump")
    scan = verify_dump(dump, chat.keyring)
    found = _one_line(scan)
    assert re.search(r"the text of 2 message\(s\) is in plaintext in chat.messages.metadata "
                     rf"\(message id .*{framed_id}", found)  # fmt: skip
    assert quoted_id in found.split("chat.messages.metadata")[1].split("\n")[0]
    assert re.search(rf"the text of 1 message\(s\) is in plaintext in large object \d+ "
                     rf"\(message id {drafted_id}\)", found)  # fmt: skip
    assert re.search(r"the text of 1 message\(s\) is in plaintext in the schema text .*"
                     rf"\(message id {quoted_id}\)", found)  # fmt: skip
    assert "chat.threads.name" not in found
    assert not any(text in found for text in (quoted, framed_text, drafted))
    blind = verify_dump(dump)
    assert not [p for p in blind.problems if "plaintext in" in p]
    assert blind.unchecked[1].startswith("plaintext elsewhere: message texts not searched")


def test_large_objects_fail_the_scan_and_are_searched(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    secret = chat.keyring.active.secret
    assert secret is not None
    # pg_dump writes large objects in 16 kB lowrite() calls: straddle the first boundary.
    data = b"x" * 16370 + base64.b64encode(secret) + b" " + KNOWN[0].encode()
    with _admin(deployed_db) as conn:
        filled = conn.execute("SELECT pg_catalog.lo_from_bytea(0, %s)", (data,)).fetchone()
        empty = conn.execute("SELECT pg_catalog.lo_create(0)").fetchone()
    assert filled is not None and empty is not None
    dump = _dump(deployed_db, tmp_path / "lo.dump")
    assert _script(dump).count("SELECT pg_catalog.lowrite(0, ") == 2
    outside = r"large objects are storage outside row-level security and encryption"
    for keyring in (chat.keyring, None):
        scan = verify_dump(dump, keyring)
        assert re.search(rf"2 large object\(s\) in the dump \(OID {filled[0]}, {empty[0]}\): "
                         + outside, _one_line(scan))  # fmt: skip
        assert scan.large_objects == 2
    found = _one_line(verify_dump(dump, chat.keyring))
    assert f"(base64) in large object {filled[0]}" in found
    assert f"plaintext in large object {filled[0]}" in found


def test_client_tools_inherit_no_secret(
    deployed_db: ChatDB, chat: Chat, empty_db: ChatDB, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    real, wrappers, seen = find_bindir(), tmp_path / "bin", tmp_path / "env"
    wrappers.mkdir()
    seen.mkdir()
    for name in ("pg_dump", "pg_restore"):
        wrapper = wrappers / name
        wrapper.write_text(f'#!/bin/sh\nenv -0 > "{seen}/{name}.$$"\nexec "{real / name}" "$@"\n')
        wrapper.chmod(0o700)
    monkeypatch.setattr(binaries, "find_bindir", lambda: wrappers)
    admin_url = deployed_db.sandbox.url_for("admin", deployed_db.name)
    monkeypatch.setenv("CHATSEC_KEYRING_PASSPHRASE", "the keyring's own passphrase")
    monkeypatch.setenv("CHATSEC_ADMIN_DATABASE_URL", admin_url)
    out = tmp_path / "chat.dump"
    backup(deployed_db.admin, out, chat.keyring)
    restore_dump(out, empty_db.admin, sorted(load_policies().roles))
    envs = {path.name: _env(path) for path in seen.iterdir()}
    for name, env in envs.items():
        assert not [var for var in env if var.startswith("CHATSEC_")], name
        assert "the keyring's own passphrase" not in env.values()
        assert admin_url not in env.values()
    # pg_dump; pg_restore --list and --file (twice: the text search) to verify; the restore.
    assert sorted(name.split(".")[0] for name in envs) == ["pg_dump"] + ["pg_restore"] * 4
    with_password = [name for name, env in envs.items() if "PGPASSWORD" in env]
    assert len(with_password) == 2  # pg_dump and the restoring pg_restore, nothing else


def _env(path: Path) -> dict[str, str]:
    pairs = [entry.split("=", 1) for entry in path.read_text().split("\0") if entry]
    return {name: value for name, value in pairs}
