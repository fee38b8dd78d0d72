"""A backup's manifest: what the dump is and held, authenticated with a key of the keyring.

`chatsec backup` writes `NAME.manifest.json` beside the dump `NAME`; `chatsec restore`
verifies it before loading anything. The manifest records the dump's SHA-256 digest and
size, the database's migration revision and rows per chat table (read in the dump's own
snapshot), when and by which chatsec it was written, and the id of the key it is
authenticated with. The MAC is HMAC-SHA256 over the manifest's canonical JSON, under a
key derived with HKDF-SHA256 from that keyring key's secret, with a salt and info that
name this purpose. The secret itself (the passphrase of every message under that key)
is never used as a MAC key: a derived key serves one purpose and reveals nothing of it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, cast

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chatsec import __version__
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Key, Keyring

FORMAT = "chatsec-backup-manifest"
VERSION = 1
SUFFIX = ".manifest.json"
MAC_FIELD = "hmac_sha256"
# HKDF's salt and info name the purpose, so this key is good for nothing else.
HKDF_SALT = b"chatsec backup manifest"
HKDF_INFO = b"chatsec backup manifest v1: HMAC-SHA256 key for keyring key "
_FIELDS = frozenset(
    {
        "format",
        "version",
        "created_at",
        "chatsec_version",
        "dump_sha256",
        "dump_size",
        "revision",
        "row_counts",
        "key_id",
        MAC_FIELD,
    }
)
# A manifest is a few hundred bytes; refuse to parse anything much larger.
MAX_MANIFEST_BYTES = 1 << 20
_HEX64 = re.compile(r"[0-9a-f]{64}")
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHUNK = 1 << 20


class ManifestError(ChatsecError):
    """A manifest that is missing, malformed, or does not verify: says what did not match."""


@dataclass(frozen=True)
class FileDigest:
    """A file's SHA-256 digest (lowercase hex) and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True)
class Manifest:
    """What a backup's manifest records (everything but the MAC)."""

    created_at: str
    chatsec_version: str
    dump_sha256: str
    dump_size: int
    revision: tuple[str, ...]
    row_counts: Mapping[str, int]
    key_id: str

    def body(self) -> dict[str, object]:
        """The fields the MAC covers, as written."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "created_at": self.created_at,
            "chatsec_version": self.chatsec_version,
            "dump_sha256": self.dump_sha256,
            "dump_size": self.dump_size,
            "revision": list(self.revision),
            "row_counts": dict(sorted(self.row_counts.items())),
            "key_id": self.key_id,
        }

    @property
    def rows(self) -> int:
        return sum(self.row_counts.values())


def manifest_path(dump: Path) -> Path:
    """Where the manifest of the dump `dump` lives: beside it, `NAME.manifest.json`."""
    return dump.with_name(dump.name + SUFFIX)


def new_manifest(
    digest: FileDigest, revision: tuple[str, ...], row_counts: Mapping[str, int], key: Key
) -> Manifest:
    """The manifest of a dump taken now, to be authenticated with `key`."""
    return Manifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        chatsec_version=__version__,
        dump_sha256=digest.sha256,
        dump_size=digest.size,
        revision=revision,
        row_counts=dict(row_counts),
        key_id=key.id,
    )


def digest_of(stream: BinaryIO, copy_to: BinaryIO | None = None) -> FileDigest:
    """SHA-256 and size of what `stream` holds from where it is, copied on if asked."""
    sha, size = hashlib.sha256(), 0
    while chunk := stream.read(_CHUNK):
        sha.update(chunk)
        size += len(chunk)
        if copy_to is not None:
            copy_to.write(chunk)
    return FileDigest(sha.hexdigest(), size)


def mac_key(key: Key) -> bytes:
    """The manifest key of a keyring key: HKDF-SHA256 of its secret, salt and info above."""
    if key.secret is None:
        raise ManifestError(
            f"the manifest is authenticated with key {key.id}, which the keyring has purged: "
            "it cannot be verified"
        )
    hkdf = HKDF(algorithm=SHA256(), length=32, salt=HKDF_SALT, info=HKDF_INFO + key.id.encode())
    return hkdf.derive(key.secret)


def canonical(body: Mapping[str, object]) -> bytes:
    """The bytes the MAC covers: sorted keys, no spaces, ASCII only."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def mac_of(body: Mapping[str, object], key: Key) -> str:
    return hmac.new(mac_key(key), canonical(body), hashlib.sha256).hexdigest()


def render(manifest: Manifest, key: Key) -> bytes:
    """The manifest file's bytes: its body and, last, the MAC under `key`."""
    if key.id != manifest.key_id:
        raise ChatsecError(f"manifest names key {manifest.key_id} but is signed with {key.id}")
    document = {**manifest.body(), MAC_FIELD: mac_of(manifest.body(), key)}
    return (json.dumps(document, indent=2) + "\n").encode()


def read_verified(dump: Path, keyring: Keyring | None) -> Manifest:
    """The manifest beside `dump`, well-formed and authentic, or a ManifestError saying why.

    Only the manifest is checked here; `check_dump` compares it with the dump's bytes.
    """
    path = manifest_path(dump)
    document = _parse(_read(path), path)
    manifest = _manifest(document, path)
    if keyring is None:
        raise ManifestError(
            f"{path} cannot be verified without the keyring that holds key "
            f"{manifest.key_id} (--keyring or $CHATSEC_KEYRING)"
        )
    key = next((k for k in keyring.keys if k.id == manifest.key_id), None)
    if key is None:
        raise ManifestError(
            f"{path} is authenticated with key {manifest.key_id}, which keyring "
            f"{keyring.path} does not have: use the keyring of the backup's time"
        )
    claimed = cast(str, document[MAC_FIELD])
    if not hmac.compare_digest(mac_of(manifest.body(), key), claimed):
        raise ManifestError(
            f"{path} does not verify: its HMAC-SHA256 is not the one key {manifest.key_id} "
            "gives (a field was changed, or it was signed with another keyring)"
        )
    return manifest


def check_dump(manifest: Manifest, digest: FileDigest) -> None:
    """Refuse a dump whose size or SHA-256 differs from what its manifest records."""
    if digest.size != manifest.dump_size:
        raise ManifestError(
            f"the dump does not match its manifest: {digest.size} bytes, the manifest "
            f"records {manifest.dump_size}"
        )
    if not hmac.compare_digest(digest.sha256, manifest.dump_sha256):
        raise ManifestError(
            f"the dump does not match its manifest: SHA-256 {digest.sha256[:16]}..., the "
            f"manifest records {manifest.dump_sha256[:16]}... (the dump was changed)"
        )


def write_new(path: Path, data: bytes) -> None:
    """Create `path` (0600) holding `data`, flushed to disk; never replaces a file there."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise ChatsecError(f"cannot create {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


# -- reading ------------------------------------------------------------------------------


def _read(path: Path) -> bytes:
    # O_NONBLOCK: a FIFO planted at the name cannot hang the open.
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ManifestError(
            f"no manifest {path} beside the dump: nothing proves it is a backup chatsec wrote"
        ) from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise ManifestError(f"manifest {path} is not a regular file")
        data = handle.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise ManifestError(f"manifest {path} is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def _parse(data: bytes, path: Path) -> dict[str, object]:
    try:
        document = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ManifestError(f"manifest {path} is not JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ManifestError(f'{path} is not a chatsec backup manifest (no "format": "{FORMAT}")')
    if document.get("version") != VERSION or type(document.get("version")) is not int:
        raise ManifestError(f"manifest {path} has unsupported version {document.get('version')!r}")
    extra, missing = sorted(set(document) - _FIELDS), sorted(_FIELDS - set(document))
    wrong: list[str] = []
    if extra:
        wrong.append(f"unexpected field(s) {', '.join(extra)}")
    if missing:
        wrong.append(f"missing field(s) {', '.join(missing)}")
    if wrong:
        raise ManifestError(f"manifest {path} is malformed: {'; '.join(wrong)}")
    return cast(dict[str, object], document)


def _bad(path: Path, name: str, expected: str) -> ManifestError:
    return ManifestError(f"manifest {path} is malformed: {name} must be {expected}")


def _text_field(document: dict[str, object], name: str, path: Path) -> str:
    value = document[name]
    if not isinstance(value, str) or not value:
        raise _bad(path, name, "a non-empty string")
    return value


def _hex_field(document: dict[str, object], name: str, path: Path) -> str:
    value = document[name]
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise _bad(path, name, "64 lowercase hex digits")
    return value


def _manifest(document: dict[str, object], path: Path) -> Manifest:
    """The typed fields of a parsed manifest, each checked for its shape."""
    created_at = _text_field(document, "created_at", path)
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        created = None
    if created is None or created.tzinfo is None:
        raise _bad(path, "created_at", "an ISO 8601 time with a time zone")
    key_id = _text_field(document, "key_id", path)
    if not _KEY_ID.fullmatch(key_id):
        raise _bad(path, "key_id", "a keyring key id")
    _hex_field(document, MAC_FIELD, path)
    size = document["dump_size"]
    if type(size) is not int or size < 0:  # type(), not isinstance: True is an int too
        raise _bad(path, "dump_size", "a non-negative integer")
    revision = document["revision"]
    if not isinstance(revision, list) or not all(isinstance(r, str) and r for r in revision):
        raise _bad(path, "revision", "a list of revision ids")
    counts = document["row_counts"]
    if not isinstance(counts, dict) or not all(
        isinstance(table, str) and type(rows) is int and rows >= 0 for table, rows in counts.items()
    ):
        raise _bad(path, "row_counts", "an object of table name -> non-negative integer")
    return Manifest(
        created_at=created_at,
        chatsec_version=_text_field(document, "chatsec_version", path),
        dump_sha256=_hex_field(document, "dump_sha256", path),
        dump_size=size,
        revision=tuple(cast(list[str], revision)),
        row_counts=cast(dict[str, int], counts),
        key_id=key_id,
    )
