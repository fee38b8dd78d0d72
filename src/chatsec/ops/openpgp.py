"""The OpenPGP messages pgcrypto writes: ASCII armor, packet structure, symmetric decryption.

Why our own OpenPGP code rather than a library: pysequoia (which installs as a wheel
here and decrypts pgcrypto's messages) and PGPy both decrypt to the final literal data
and hide the layer inside the encryption, so neither can tell a compressed message from
the trigger's; PGPy is unmaintained, warns about the cipher modes it uses being removed
from `cryptography`, and decrypts messages without integrity protection. What pgcrypto
writes is a small, fixed subset of RFC 4880 (salted S2K, AES, SEIPD v1 with an MDC), so
this module parses packet headers (old and new format, partial body lengths) and
decrypts with `cryptography`'s AES block function, and its tests run against pgcrypto's
own output.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# -- ASCII armor (RFC 4880 section 6) ------------------------------------------------------


class OpenPGPError(ValueError):
    """Data that is not what pgcrypto's pgp_sym_encrypt + armor write; the text is a reason."""


class NotDecryptable(OpenPGPError):
    """Well-formed ciphertext that does not open with the key its armor names."""


_BEGIN = "-----BEGIN PGP MESSAGE-----"
_END = "-----END PGP MESSAGE-----"
_ARMOR_HEADER = re.compile(r"([!-9;-~]+): (.*)")
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/]+=*")
_CHECKSUM_LINE = re.compile(r"=([A-Za-z0-9+/]{4})")
KEY_HEADER = "Chatsec-Key"


@dataclass(frozen=True)
class Armored:
    """A dearmored message: its armor headers, in order, and the binary data."""

    headers: tuple[tuple[str, str], ...]
    data: bytes


def _crc24_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte << 16
        for _ in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
        table.append(crc & 0xFFFFFF)
    return tuple(table)


_CRC24_TABLE = _crc24_table()


def crc24(data: bytes) -> int:
    """The armor checksum of RFC 4880 section 6.1 (table-driven: one lookup per byte)."""
    crc, table = 0xB704CE, _CRC24_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFF) ^ table[(crc >> 16) ^ byte]
    return crc


def dearmor(text: str) -> Armored:
    """Parse one armored PGP MESSAGE exactly (checksum required and checked)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the END line
    lines = [line.removesuffix("\r") for line in lines]
    if len(lines) < 4 or lines[0] != _BEGIN:
        raise OpenPGPError("not ASCII-armored PGP")
    if lines[-1] != _END:
        raise OpenPGPError("ASCII armor without its END line")
    at = 1
    headers: list[tuple[str, str]] = []
    while at < len(lines) - 1 and lines[at] != "":
        header = _ARMOR_HEADER.fullmatch(lines[at])
        if header is None:
            raise OpenPGPError("malformed ASCII armor header")
        headers.append((header.group(1), header.group(2)))
        at += 1
    body = lines[at + 1 : -1]
    checksum = _CHECKSUM_LINE.fullmatch(body[-1]) if body else None
    if at >= len(lines) - 1 or checksum is None:
        raise OpenPGPError("ASCII armor without its checksum line")
    if not body[:-1] or not all(_BASE64_LINE.fullmatch(line) for line in body[:-1]):
        raise OpenPGPError("ASCII armor body is not base64")
    try:
        data = base64.b64decode("".join(body[:-1]), validate=True)
        expected = int.from_bytes(base64.b64decode(checksum.group(1), validate=True), "big")
    except binascii.Error:
        raise OpenPGPError("ASCII armor body is not base64") from None
    if crc24(data) != expected:
        raise OpenPGPError("ASCII armor checksum (CRC-24) does not match its data")
    return Armored(tuple(headers), data)


# -- OpenPGP packets (RFC 4880 section 4) --------------------------------------------------

TAG_NAMES = {
    1: "public-key encrypted session key",
    2: "signature",
    3: "symmetric-key encrypted session key",
    4: "one-pass signature",
    8: "compressed data",
    9: "symmetrically encrypted data without integrity protection",
    10: "marker",
    11: "literal data",
    18: "symmetrically encrypted integrity protected data",
    19: "modification detection code",
    20: "AEAD encrypted data",
}
TAG_SKESK, TAG_COMPRESSED, TAG_LITERAL, TAG_SEIPD = 3, 8, 11, 18
# Only data packets may be sent in pieces (partial body lengths).
_STREAMABLE = frozenset({8, 9, 11, 18, 20})


@dataclass(frozen=True)
class Packet:
    """One OpenPGP packet: its tag and its whole body (partial pieces joined)."""

    tag: int
    body: bytes

    @property
    def name(self) -> str:
        return f"{TAG_NAMES.get(self.tag, 'packet')} ({self.tag})"


def parse_packets(data: bytes) -> list[Packet]:
    """The packet sequence of `data`; old- and new-format headers, partial body lengths."""
    packets: list[Packet] = []
    at = 0
    while at < len(data):
        first = data[at]
        if not first & 0x80:
            raise OpenPGPError("not OpenPGP packets (no packet header)")
        if first & 0x40:
            tag = first & 0x3F
            body, at = _new_format_body(data, at + 1, tag)
        else:
            tag = (first >> 2) & 0x0F
            body, at = _old_format_body(data, at + 1, first & 0x03)
        packets.append(Packet(tag, body))
    if not packets:
        raise OpenPGPError("no OpenPGP packets")
    return packets


def _take(data: bytes, at: int, size: int) -> tuple[bytes, int]:
    if at + size > len(data):
        raise OpenPGPError("truncated OpenPGP packet")
    return data[at : at + size], at + size


def _old_format_body(data: bytes, at: int, length_type: int) -> tuple[bytes, int]:
    if length_type == 3:  # indeterminate: the packet runs to the end of the data
        return data[at:], len(data)
    size_bytes, at = _take(data, at, (1, 2, 4)[length_type])
    return _take(data, at, int.from_bytes(size_bytes, "big"))


def _new_format_body(data: bytes, at: int, tag: int) -> tuple[bytes, int]:
    pieces: list[bytes] = []
    while True:
        octet, at = _take(data, at, 1)
        first = octet[0]
        if first < 192:
            size = first
        elif first < 224:
            second, at = _take(data, at, 1)
            size = ((first - 192) << 8) + second[0] + 192
        elif first == 255:
            size_bytes, at = _take(data, at, 4)
            size = int.from_bytes(size_bytes, "big")
        else:
            if tag not in _STREAMABLE:
                raise OpenPGPError(f"partial body length on a {TAG_NAMES.get(tag, 'packet')}")
            piece, at = _take(data, at, 1 << (first & 0x1F))
            pieces.append(piece)
            continue
        piece, at = _take(data, at, size)
        pieces.append(piece)
        return b"".join(pieces), at


def require_encrypted(packets: list[Packet]) -> None:
    """Exactly SKESK v4 then SEIPD v1, as pgp_sym_encrypt writes; otherwise OpenPGPError."""
    if [p.tag for p in packets] != [TAG_SKESK, TAG_SEIPD]:
        found = ", ".join(p.name for p in packets)
        raise OpenPGPError(f"OpenPGP {found} instead of an encrypted message")
    skesk, seipd = packets
    if not skesk.body or skesk.body[0] != 4:
        raise OpenPGPError("symmetric-key encrypted session key packet is not version 4")
    if not seipd.body or seipd.body[0] != 1:
        raise OpenPGPError("integrity protected data packet is not version 1")


# -- symmetric decryption (RFC 4880 sections 3.7, 5.3, 5.13) -------------------------------

_AES_KEY_BYTES = {7: 16, 8: 24, 9: 32}  # AES-128, AES-192, AES-256
_HASHES = {1: "md5", 2: "sha1", 8: "sha256", 9: "sha384", 10: "sha512", 11: "sha224"}
_BLOCK = 16
_MDC_HEADER = b"\xd3\x14"  # new-format tag 19, 20 bytes of SHA-1
_LITERAL_FORMATS = frozenset(b"btu")
_HASH_CHUNK = 1 << 16


@dataclass(frozen=True)
class _S2K:
    kind: int
    hash_name: str
    salt: bytes
    count: int


def _parse_skesk(body: bytes) -> tuple[int, _S2K, bytes]:
    """(cipher algorithm, S2K specifier, encrypted session key or b"") of a v4 SKESK."""
    if len(body) < 4:
        raise OpenPGPError("truncated symmetric-key encrypted session key packet")
    cipher, kind, hash_id = body[1], body[2], body[3]
    if hash_id not in _HASHES:
        raise NotDecryptable(f"S2K hash algorithm {hash_id} is not supported")
    if kind == 0:
        return cipher, _S2K(kind, _HASHES[hash_id], b"", 0), body[4:]
    if kind == 1:
        salt, at = _take(body, 4, 8)
        return cipher, _S2K(kind, _HASHES[hash_id], salt, 0), body[at:]
    if kind == 3:
        salt, at = _take(body, 4, 8)
        coded, at = _take(body, at, 1)
        count = (16 + (coded[0] & 15)) << ((coded[0] >> 4) + 6)
        return cipher, _S2K(kind, _HASHES[hash_id], salt, count), body[at:]
    raise NotDecryptable(f"S2K type {kind} is not supported")


def _s2k(spec: _S2K, passphrase: bytes, size: int) -> bytes:
    """The key a passphrase makes under an S2K specifier (simple, salted, iterated+salted)."""
    material = spec.salt + passphrase
    key = b""
    preload = 0
    while len(key) < size:
        try:
            digest = hashlib.new(spec.hash_name)
        except ValueError:  # e.g. MD5 on a FIPS build of OpenSSL
            raise NotDecryptable(f"S2K hash {spec.hash_name} is not available here") from None
        digest.update(bytes(preload))
        if spec.kind == 3 and spec.count > len(material):
            _hash_repeated(digest.update, material, spec.count)
        else:
            digest.update(material)
        key += digest.digest()
        preload += 1
    return key[:size]


def _hash_repeated(update: Callable[[bytes], None], material: bytes, count: int) -> None:
    # `count` bytes of material repeated, fed in bounded chunks (count may be ~65 MB).
    chunk = material * max(1, _HASH_CHUNK // len(material))
    left = count
    while left >= len(chunk):
        update(chunk)
        left -= len(chunk)
    update(chunk[:left])


def _cfb_decrypt(key: bytes, data: bytes) -> bytes:
    """AES-CFB with a zero IV (OpenPGP's SEIPD and session keys), from the block function.

    Plaintext block i is ciphertext block i XOR E(ciphertext block i-1), the IV standing
    in for block -1: the whole keystream is one ECB pass over IV + all but the last block.
    Built here so it does not depend on `cryptography` versions that move CFB to its
    `decrepit` module.
    """
    blocks = -(-len(data) // _BLOCK)
    feed = (bytes(_BLOCK) + data)[: blocks * _BLOCK]
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()  # noqa: S305 - see above
    stream = encryptor.update(feed) + encryptor.finalize()
    mixed = int.from_bytes(data, "big") ^ int.from_bytes(stream[: len(data)], "big")
    return mixed.to_bytes(len(data), "big")


def _session_key(skesk: Packet, passphrase: bytes) -> bytes:
    cipher, spec, encrypted_key = _parse_skesk(skesk.body)
    if cipher not in _AES_KEY_BYTES:
        raise NotDecryptable(f"cipher algorithm {cipher} is not AES")
    key = _s2k(spec, passphrase, _AES_KEY_BYTES[cipher])
    if not encrypted_key:
        return key  # the S2K output is the session key itself (pgcrypto's default)
    session = _cfb_decrypt(key, encrypted_key)
    if session[0] not in _AES_KEY_BYTES or len(session) - 1 != _AES_KEY_BYTES[session[0]]:
        raise NotDecryptable("wrong key or corrupt data (session key does not unwrap)")
    return session[1:]


def decrypt(packets: list[Packet], passphrase: bytes) -> bytes:
    """The literal data of SKESK + SEIPD `packets`; NotDecryptable unless the MDC holds.

    Anything inside the encryption but one literal data packet (compression included)
    raises OpenPGPError: the trigger never writes it.
    """
    require_encrypted(packets)
    key = _session_key(packets[0], passphrase)
    plain = _cfb_decrypt(key, packets[1].body[1:])
    if len(plain) < _BLOCK + 2 + len(_MDC_HEADER) + 20:
        raise NotDecryptable("integrity protected data too short for its MDC")
    # The repeated last two prefix bytes are a quick check; the MDC is the proof.
    quick_check_holds = plain[_BLOCK - 2 : _BLOCK] == plain[_BLOCK : _BLOCK + 2]
    mdc = hashlib.sha1(plain[:-20]).digest()  # noqa: S324 - SHA-1 is what RFC 4880's MDC is
    if not quick_check_holds or not hmac.compare_digest(plain[-22:], _MDC_HEADER + mdc):
        raise NotDecryptable("wrong key or corrupt data (integrity check failed)")
    return _literal_data(parse_packets(plain[_BLOCK + 2 : -22]))


def _literal_data(inner: list[Packet]) -> bytes:
    if [p.tag for p in inner] == [TAG_COMPRESSED]:
        raise OpenPGPError("compressed inside the encryption (the trigger never compresses)")
    if [p.tag for p in inner] != [TAG_LITERAL]:
        found = ", ".join(p.name for p in inner)
        raise OpenPGPError(f"inside the encryption: {found} instead of literal data")
    body = inner[0].body
    if len(body) < 6 or body[0] not in _LITERAL_FORMATS or len(body) < 6 + body[1]:
        raise OpenPGPError("malformed literal data packet inside the encryption")
    return body[6 + body[1] :]
