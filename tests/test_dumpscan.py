"""The dump scanner's OpenPGP reading, against what pgcrypto itself writes."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from chatsec.ops.dumpscan import CopyRow, LargeObject, message_text, read_script
from chatsec.ops.openpgp import (
    NotDecryptable,
    OpenPGPError,
    Packet,
    crc24,
    dearmor,
    decrypt,
    parse_packets,
    require_encrypted,
)
from chatsec.sandbox.binaries import child_env
from tests.conftest import ChatDB

TRIGGER_OPTIONS = "cipher-algo=aes256, s2k-mode=1"  # what chat.encrypt_message() passes
KEY = secrets.token_hex(32)  # a keyring key's material: the pgcrypto passphrase


@pytest.fixture(scope="module")
def pg(shared_deployed_db: ChatDB) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(shared_deployed_db.admin.libpq, autocommit=True) as conn:
        yield conn


def encrypted(pg: psycopg.Connection[Any], text: str, options: str = TRIGGER_OPTIONS) -> str:
    """pgcrypto's armored ciphertext of `text` under KEY, with the trigger's armor header."""
    row = pg.execute(
        "SELECT extensions.armor(extensions.pgp_sym_encrypt(%s, %s, %s), "
        "ARRAY['Chatsec-Key'], ARRAY['k1'])",
        (text, KEY, options),
    ).fetchone()
    assert row is not None
    return str(row[0])


def armored(pg: psycopg.Connection[Any], data: bytes) -> str:
    """pgcrypto's armor() of arbitrary bytes, with the trigger's armor header."""
    row = pg.execute(
        "SELECT extensions.armor(%s::bytea, ARRAY['Chatsec-Key'], ARRAY['k1'])", (data,)
    ).fetchone()
    assert row is not None
    return str(row[0])


def literal_packet(text: bytes) -> bytes:
    """An OpenPGP literal data packet (tag 11, new format): plaintext in packet clothing."""
    body = b"t\x00\x00\x00\x00\x00" + text
    return bytes([0xC0 | 11, len(body)]) + body


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("hello, the trigger's options", TRIGGER_OPTIONS),
        ("long message " * 8000, TRIGGER_OPTIONS),  # 104 kB: partial body lengths
        ("grüße, ünïcödé and 🎉", TRIGGER_OPTIONS),
        ("", TRIGGER_OPTIONS),
        ("iterated and salted S2K, AES-128", "cipher-algo=aes128"),
        ("simple S2K", "cipher-algo=aes256, s2k-mode=0"),
        ("an encrypted session key, AES-192", "cipher-algo=aes192, sess-key=1"),
        ("MD5 in the S2K", "cipher-algo=aes256, s2k-mode=1, s2k-digest-algo=md5"),
    ],
)
def test_decrypts_what_pgcrypto_writes(
    pg: psycopg.Connection[Any], text: str, options: str
) -> None:
    message = dearmor(encrypted(pg, text, options))
    assert message.headers == (("Chatsec-Key", "k1"),)
    packets = parse_packets(message.data)
    require_encrypted(packets)
    assert decrypt(packets, KEY.encode()) == text.encode()
    if len(text) > 100_000:
        # The case is exercised: pgcrypto sent the SEIPD body in partial lengths.
        skesk_end = 2 + message.data[1]
        assert message.data[skesk_end] == 0xC0 | 18 and message.data[skesk_end + 1] >= 224


def test_wrong_key_and_tampering_do_not_decrypt(pg: psycopg.Connection[Any]) -> None:
    packets = parse_packets(dearmor(encrypted(pg, "a message worth keeping")).data)
    with pytest.raises(NotDecryptable, match="wrong key"):
        decrypt(packets, secrets.token_hex(32).encode())
    # One flipped bit in the last ciphertext byte, re-armored with a valid checksum.
    skesk, seipd = packets
    flipped = seipd.body[:-1] + bytes([seipd.body[-1] ^ 1])
    tampered = dearmor(armored(pg, _new_format(3, skesk.body) + _new_format(18, flipped)))
    with pytest.raises(NotDecryptable, match="integrity check failed"):
        decrypt(parse_packets(tampered.data), KEY.encode())


def test_unprotected_and_compressed_messages_are_not_what_the_trigger_writes(
    pg: psycopg.Connection[Any],
) -> None:
    no_mdc = parse_packets(
        dearmor(encrypted(pg, "no MDC", f"{TRIGGER_OPTIONS}, disable-mdc=1")).data
    )
    with pytest.raises(OpenPGPError, match=r"without integrity protection \(9\)"):
        require_encrypted(no_mdc)
    for algorithm in (1, 2):  # ZIP and ZLIB, inside the encryption
        options = f"{TRIGGER_OPTIONS}, compress-algo={algorithm}"
        packets = parse_packets(dearmor(encrypted(pg, "squeezed " * 20, options)).data)
        require_encrypted(packets)  # the outside looks exactly like the trigger's
        with pytest.raises(OpenPGPError, match="compressed inside the encryption") as caught:
            decrypt(packets, KEY.encode())
        assert not isinstance(caught.value, NotDecryptable)


def test_armored_bytes_that_are_not_an_encrypted_message_are_refused(
    pg: psycopg.Connection[Any],
) -> None:
    plain = parse_packets(dearmor(armored(pg, literal_packet(b"hello there"))).data)
    assert [p.tag for p in plain] == [11]
    with pytest.raises(OpenPGPError, match=r"literal data \(11\) instead of an encrypted"):
        require_encrypted(plain)
    with pytest.raises(OpenPGPError, match="not OpenPGP packets"):
        parse_packets(dearmor(armored(pg, b"just some text")).data)


def test_dearmor_checks_the_checksum_and_the_layout(pg: psycopg.Connection[Any]) -> None:
    good = encrypted(pg, "checksummed")
    body = dearmor(good).data
    lines = good.split("\n")
    crc_at = next(i for i, line in enumerate(lines) if line.startswith("="))
    assert base64.b64decode(lines[crc_at][1:]) == crc24(body).to_bytes(3, "big")
    wrong_crc = lines.copy()
    wrong_crc[crc_at] = "=" + base64.b64encode((crc24(body) ^ 1).to_bytes(3, "big")).decode()
    one_char = lines.copy()
    one_char[crc_at - 1] = _change_one_char(lines[crc_at - 1])
    for bad in (wrong_crc, one_char):
        with pytest.raises(OpenPGPError, match=r"checksum \(CRC-24\) does not match"):
            dearmor("\n".join(bad))
    no_crc = lines[:crc_at] + lines[crc_at + 1 :]
    with pytest.raises(OpenPGPError, match="without its checksum"):
        dearmor("\n".join(no_crc))
    with pytest.raises(OpenPGPError, match="without its END"):
        dearmor(good + "and a postscript in plaintext\n")
    with pytest.raises(OpenPGPError, match="not ASCII-armored"):
        dearmor("-----BEGIN PGP MESSAGE-----\nthe tampered plaintext")
    assert dearmor(good.replace("\n", "\r\n")).data == body  # CRLF is the same armor


def test_packet_headers_old_and_new_format(pg: psycopg.Connection[Any]) -> None:
    skesk, seipd = parse_packets(dearmor(encrypted(pg, "framed many ways")).data)
    # The same packets with every header form RFC 4880 allows (old format stops at tag 15).
    skesk_forms = [_old_format(3, skesk.body, length_type) for length_type in (0, 1, 2)]
    skesk_forms.append(_new_format(3, skesk.body, five=True))
    seipd_forms = [_new_format(18, seipd.body), _new_format(18, seipd.body, five=True)]
    for skesk_form in skesk_forms:
        for seipd_form in seipd_forms:
            packets = parse_packets(skesk_form + seipd_form)
            assert packets == [skesk, seipd]
            assert decrypt(packets, KEY.encode()) == b"framed many ways"
    # An old-format packet of indeterminate length runs to the end.
    assert parse_packets(bytes([0x80 | 11 << 2 | 3]) + b"t\0\0\0\0\0rest") == [
        Packet(11, b"t\0\0\0\0\0rest")
    ]
    whole = skesk_forms[0] + seipd_forms[0]
    with pytest.raises(OpenPGPError, match="truncated"):
        parse_packets(whole[:-1])
    with pytest.raises(OpenPGPError, match="partial body length on a symmetric-key"):
        parse_packets(bytes([0xC3, 0xE0]) + bytes(1))


def test_message_text_drops_a_binding_frame() -> None:
    frame = "\x01chatsec/2 4f1c7a9e-0000-4000-8000-000000000001 4f1c7a9e-0000-4000-8000-000000000002\x01"
    assert len(frame) == 85
    assert message_text(frame + "the text itself") == "the text itself"
    assert message_text("no frame at all") == "no frame at all"
    unterminated = "\x01" + "x" * 120 + "\x01tail"
    assert message_text(unterminated) == unterminated  # no second mark within 100 characters


def test_read_script_renders_large_objects_and_copy_rows() -> None:
    script = [
        "SELECT pg_catalog.lo_create('16401');",
        "COPY chat.t (id, note) FROM stdin;",
        "1\tline one\\nline two",
        "2\t\\N",
        "\\.",
        "SELECT pg_catalog.lo_open('16401', 131072);",
        "SELECT pg_catalog.lowrite(0, '\\x6869');",
        "SELECT pg_catalog.lowrite(0, E'\\\\x21');",
        "SELECT pg_catalog.lo_close(0);",
    ]
    items = list(read_script(script))
    rows = [item.fields for item in items if isinstance(item, CopyRow)]
    assert rows == [("1", "line one\nline two"), ("2", None)]
    blobs = [(item.oid, item.data) for item in items if isinstance(item, LargeObject)]
    assert blobs == [("16401", b""), ("16401", b"hi!")]


def test_child_env_drops_redirects_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATSEC_KEYRING_PASSPHRASE", "a passphrase")
    monkeypatch.setenv("CHATSEC_ADMIN_DATABASE_URL", "postgresql://a:secret@h/db")
    monkeypatch.setenv("CHATSEC_SOMETHING_NEW", "postgresql://b:secret@h/db")
    monkeypatch.setenv("PGSERVICE", "elsewhere")
    monkeypatch.setenv("LANG", "C.UTF-8")
    env = child_env({"PGPASSWORD": "given"})
    assert not [name for name in env if name.startswith("CHATSEC_")]
    assert "PGSERVICE" not in env and env["PGPASSWORD"] == "given" and env["LANG"] == "C.UTF-8"


def _new_format(tag: int, body: bytes, five: bool = False) -> bytes:
    if five:
        return bytes([0xC0 | tag, 255]) + len(body).to_bytes(4, "big") + body
    if len(body) < 192:
        return bytes([0xC0 | tag, len(body)]) + body
    size = len(body) - 192
    assert size < 8192
    return bytes([0xC0 | tag, (size >> 8) + 192, size & 0xFF]) + body


def _old_format(tag: int, body: bytes, length_type: int) -> bytes:
    size = len(body).to_bytes((1, 2, 4)[length_type], "big")
    return bytes([0x80 | tag << 2 | length_type]) + size + body


def _change_one_char(line: str) -> str:
    replacement = "A" if line[0] != "A" else "B"
    return replacement + line[1:]
