"""The encryption keyring: pgcrypto keys kept in a versioned JSON file, optionally sealed."""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import secrets
import stat
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chatsec.errors import ChatsecError

Status = Literal["active", "previous", "retired"]
STATUSES: tuple[Status, ...] = ("active", "previous", "retired")

FORMAT = "chatsec-keyring"
VERSION = 1
KEYRING_ENV = "CHATSEC_KEYRING"
PASSPHRASE_ENV = "CHATSEC_KEYRING_PASSPHRASE"  # noqa: S105 - a variable name

# Ids are stored in a database column next to each ciphertext, so keep them boring.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRET_BYTES = 32
_HEX_RE = re.compile(r"[0-9a-fA-F]*")
_KEY_FIELDS = frozenset({"id", "created_at", "status", "secret"})

_AAD = b"chatsec-keyring-v1"
_CIPHER = "AES-256-GCM"
_KDF = "scrypt"
_SCRYPT_N, _SCRYPT_R, _SCRYPT_P = 2**15, 8, 1
# Bounds on parameters read from a file, so a tampered file cannot make load() take
# gigabytes of memory or minutes of CPU before the tag check rejects it.
_MAX_N, _MAX_R, _MAX_P, _MAX_MEMORY = 2**20, 32, 16, 2**30
_MIN_SALT_BYTES = 16
_NONCE_BYTES = 12


@dataclass(frozen=True)
class Key:
    """One encryption key; `material` is the pgcrypto passphrase. repr never shows the secret."""

    id: str
    created_at: str
    status: Status
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not _ID_RE.fullmatch(self.id):
            raise ChatsecError(
                f"bad key id {self.id!r}: expected 1-64 characters from A-Z a-z 0-9 _ -"
            )
        if self.status not in STATUSES:
            raise ChatsecError(
                f"key {self.id} has bad status {self.status!r}: "
                "expected active, previous or retired"
            )
        if len(self.secret) != _SECRET_BYTES:
            raise ChatsecError(
                f"key {self.id} has a {len(self.secret)}-byte secret: expected {_SECRET_BYTES}"
            )
        _parse_timestamp(self.created_at, self.id)

    @property
    def material(self) -> str:
        """The passphrase given to pgp_sym_encrypt/pgp_sym_decrypt: the secret as 64 hex digits."""
        return self.secret.hex()

    @property
    def created(self) -> datetime:
        return _parse_timestamp(self.created_at, self.id)

    def to_json(self) -> dict[str, str]:
        return {
            "id": self.id,
            "created_at": self.created_at,
            "status": self.status,
            "secret": self.secret.hex(),
        }


class Keyring:
    """The keys stored at `path`; saved sealed with a passphrase when `sealed` is true."""

    def __init__(
        self, path: Path, keys: list[Key] | None = None, passphrase: str | None = None
    ) -> None:
        self._path = path
        self._keys = list(keys or [])
        _check_keys(self._keys, f"keyring {path}")
        self._passphrase = None if passphrase is None else _check_passphrase(passphrase)

    def __repr__(self) -> str:
        # Written by hand so the passphrase can never end up in a log line.
        return f"Keyring({str(self._path)!r}, keys={len(self._keys)}, sealed={self.sealed})"

    @classmethod
    def empty(cls, path: Path, passphrase: str | None = None) -> Keyring:
        """A keyring with no keys, not yet written to `path`."""
        return cls(path, [], passphrase)

    @classmethod
    def create(cls, path: Path, passphrase: str | None = None) -> Keyring:
        """Write a new empty keyring at `path`, refusing to overwrite an existing file."""
        if path.exists():
            raise ChatsecError(f"keyring {path} already exists")
        keyring = cls.empty(path, passphrase)
        keyring.save()
        return keyring

    @classmethod
    def load(cls, path: Path, passphrase: str | None = None) -> Keyring:
        """Read the keyring at `path`; `passphrase` is needed only if the file is sealed."""
        document = _parse_json(_read_private(path), f"keyring {path}")
        keys, sealed = _parse_document(document, path, passphrase)
        return cls(path, keys, passphrase if sealed else None)

    @classmethod
    def load_or_empty(cls, path: Path, passphrase: str | None = None) -> Keyring:
        """`load` if `path` exists, else `empty` (sealed if a passphrase is given)."""
        if os.path.lexists(path):
            return cls.load(path, passphrase)
        return cls.empty(path, passphrase)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def sealed(self) -> bool:
        return self._passphrase is not None

    @property
    def keys(self) -> list[Key]:
        return list(self._keys)

    @property
    def active(self) -> Key:
        for key in self._keys:
            if key.status == "active":
                return key
        raise ChatsecError(f"keyring {self._path} has no active key: chatsec keys generate")

    @property
    def readable_keys(self) -> list[Key]:
        """Keys that may still decrypt: the active one first, then previous ones, newest first."""
        previous = [key for key in self._keys if key.status == "previous"]
        previous.sort(key=lambda key: key.created, reverse=True)
        return [key for key in self._keys if key.status == "active"] + previous

    def get(self, key_id: str) -> Key:
        for key in self._keys:
            if key.id == key_id:
                return key
        raise ChatsecError(f"keyring {self._path} has no key {key_id!r}")

    def generate(self, activate: bool = True) -> Key:
        """Add a fresh key; active (demoting the old active key to previous) or else previous."""
        now = datetime.now(UTC)
        taken = {key.id for key in self._keys}
        key_id = _new_id(now)
        while key_id in taken:
            key_id = _new_id(now)
        key = Key(
            id=key_id,
            created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            status="active" if activate else "previous",
            secret=secrets.token_bytes(_SECRET_BYTES),
        )
        if activate:
            self._demote_active()
        self._keys.append(key)
        return key

    def activate(self, key_id: str) -> Key:
        """Make `key_id` the key new data is encrypted with; the old active key becomes previous."""
        key = self.get(key_id)
        if key.status == "retired":
            # A retired key may have been retired because it leaked; never write with it again.
            raise ChatsecError(
                f"key {key_id} is retired and cannot be activated: generate a new key"
            )
        if key.status == "active":
            return key
        self._demote_active()
        return self._set_status(key_id, "active")

    def retire(self, key_id: str) -> Key:
        """Stop using `key_id` for decryption; the caller checks no stored row still needs it."""
        key = self.get(key_id)
        if key.status == "active":
            raise ChatsecError(
                f"key {key_id} is the active key of keyring {self._path}: "
                "activate or generate another key before retiring it"
            )
        return self._set_status(key_id, "retired")

    def seal(self, passphrase: str) -> None:
        """Save sealed with `passphrase` from now on."""
        self._passphrase = _check_passphrase(passphrase)

    def unseal(self) -> None:
        """Save as plain JSON from now on (still mode 0600)."""
        self._passphrase = None

    def save(self) -> None:
        """Write the keyring atomically with mode 0600, sealed if it has a passphrase."""
        entries = [key.to_json() for key in self._keys]
        document: dict[str, object] = {"format": FORMAT, "version": VERSION}
        if self._passphrase is None:
            document["keys"] = entries
        else:
            document["sealed"] = _seal(json.dumps(entries).encode(), self._passphrase)
        _write_private(self._path, (json.dumps(document, indent=2) + "\n").encode())

    def _demote_active(self) -> None:
        for key in self._keys:
            if key.status == "active":
                self._set_status(key.id, "previous")

    def _set_status(self, key_id: str, status: Status) -> Key:
        for index, key in enumerate(self._keys):
            if key.id == key_id:
                self._keys[index] = replace(key, status=status)
                return self._keys[index]
        raise ChatsecError(f"keyring {self._path} has no key {key_id!r}")


def resolve_keyring_path(explicit: str | None) -> Path:
    """The keyring path from --keyring, else from $CHATSEC_KEYRING."""
    raw = explicit or os.environ.get(KEYRING_ENV)
    if not raw:
        raise ChatsecError(f"no keyring given: pass --keyring PATH or set {KEYRING_ENV}")
    return Path(raw).expanduser()


def passphrase_from_env() -> str | None:
    """$CHATSEC_KEYRING_PASSPHRASE, or None when unset or empty."""
    return os.environ.get(PASSPHRASE_ENV) or None


def _new_id(now: datetime) -> str:
    # Date first so ids sort by creation day; 32 random bits keep same-day keys apart.
    return f"k{now:%Y%m%d}-{secrets.token_hex(4)}"


def _parse_timestamp(value: str, key_id: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.utcoffset() != timedelta(0):
        raise ChatsecError(
            f"key {key_id} has bad created_at {value!r}: expected ISO 8601 UTC "
            "such as 2026-11-25T10:00:00Z"
        )
    return parsed


def _check_passphrase(passphrase: str) -> str:
    if not passphrase:
        raise ChatsecError("keyring passphrase must not be empty")
    return passphrase


def _check_keys(keys: list[Key], where: str) -> None:
    seen: set[str] = set()
    for key in keys:
        if key.id in seen:
            raise ChatsecError(f"{where} has two keys with id {key.id}")
        seen.add(key.id)
    active = [key.id for key in keys if key.status == "active"]
    if len(active) > 1:
        raise ChatsecError(
            f"{where} has {len(active)} active keys ({', '.join(active)}): at most 1 is allowed"
        )


def _read_private(path: Path) -> bytes:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise ChatsecError(
            f"keyring {path} does not exist: chatsec keys generate --keyring {path}"
        ) from None
    except OSError as exc:
        raise ChatsecError(f"cannot read keyring {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        # fstat on the open file, not stat on the name, so the checked file is the one read.
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ChatsecError(f"keyring {path} is not a regular file")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            grants = "readable" if mode & 0o044 else "accessible"
            raise ChatsecError(
                f"keyring {path} is {grants} by others (mode {mode:04o}): chmod 600 {path}"
            )
        try:
            return handle.read()
        except OSError as exc:
            raise ChatsecError(f"cannot read keyring {path}: {exc.strerror}") from None


def _write_private(path: Path, data: bytes) -> None:
    # A temp file in the same directory makes os.replace atomic; O_EXCL refuses to
    # follow a planted symlink, and 0600 means the secret is never briefly world-readable.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as exc:
        raise ChatsecError(f"cannot write keyring {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ChatsecError(f"cannot write keyring {path}: {exc.strerror}") from None
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    # Makes the rename durable; some filesystems refuse to open or fsync directories.
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _parse_json(raw: bytes, where: str) -> object:
    try:
        return cast(object, json.loads(raw.decode("utf-8")))
    except UnicodeDecodeError:
        raise ChatsecError(f"{where} is not valid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ChatsecError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


def _parse_document(document: object, path: Path, passphrase: str | None) -> tuple[list[Key], bool]:
    """The keys in a parsed keyring file, and whether it was sealed."""
    where = f"keyring {path}"
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ChatsecError(f'{path} is not a chatsec keyring (no "format": "{FORMAT}")')
    version = document.get("version")
    # type() rather than ==, since True == 1 in Python.
    if type(version) is not int or version != VERSION:
        raise ChatsecError(
            f"{where} has unsupported version {version!r}: this chatsec reads version {VERSION}"
        )
    body = set(document) - {"format", "version"}
    if body not in ({"keys"}, {"sealed"}):
        found = ", ".join(sorted(body)) or "nothing"
        raise ChatsecError(f'{where} must have exactly one of "keys" or "sealed" (found {found})')
    if "keys" in document:
        return _parse_keys(document["keys"], where), False
    if passphrase is None:
        raise ChatsecError(f"{where} is sealed: set {PASSPHRASE_ENV} to its passphrase")
    plaintext = _unseal(document["sealed"], passphrase, path)
    return _parse_keys(_parse_json(plaintext, f"sealed {where}"), where), True


def _parse_keys(entries: object, where: str) -> list[Key]:
    if not isinstance(entries, list):
        raise ChatsecError(f'{where}: "keys" must be a list')
    keys = [_parse_key(entry, f"{where}, key #{index + 1}") for index, entry in enumerate(entries)]
    _check_keys(keys, where)
    return keys


def _parse_key(entry: object, where: str) -> Key:
    if not isinstance(entry, dict) or set(entry) != _KEY_FIELDS:
        names = ", ".join(sorted(_KEY_FIELDS))
        raise ChatsecError(f"{where}: expected an object with exactly the fields {names}")
    if not all(isinstance(value, str) for value in entry.values()):
        raise ChatsecError(f"{where}: every field must be a string")
    fields = cast(dict[str, str], entry)
    secret = fields["secret"]
    # Never echo the secret itself in an error, only what is wrong with it.
    if len(secret) != 2 * _SECRET_BYTES:
        raise ChatsecError(
            f"{where}: secret is {len(secret)} characters, expected {2 * _SECRET_BYTES} hex digits"
        )
    if not _HEX_RE.fullmatch(secret):
        raise ChatsecError(f"{where}: secret is not hexadecimal")
    try:
        return Key(
            id=fields["id"],
            created_at=fields["created_at"],
            status=cast(Status, fields["status"]),
            secret=bytes.fromhex(secret),
        )
    except ChatsecError as exc:
        raise ChatsecError(f"{where}: {exc}") from None


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    # NFC so the same passphrase typed on systems that compose accents differently still works.
    secret = unicodedata.normalize("NFC", passphrase).encode("utf-8")
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(secret)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _seal(plaintext: bytes, passphrase: str) -> dict[str, object]:
    # Fresh salt on every save, so each save also gets a fresh AES key and nonce reuse is moot.
    salt = secrets.token_bytes(_MIN_SALT_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    key = _derive(passphrase, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return {
        "kdf": _KDF,
        "n": _SCRYPT_N,
        "r": _SCRYPT_R,
        "p": _SCRYPT_P,
        "salt": _b64(salt),
        "cipher": _CIPHER,
        "nonce": _b64(nonce),
        "ciphertext": _b64(AESGCM(key).encrypt(nonce, plaintext, _AAD)),
    }


def _unseal(sealed: object, passphrase: str, path: Path) -> bytes:
    where = f'keyring {path} has a bad "sealed" section'
    if not isinstance(sealed, dict):
        raise ChatsecError(f"{where}: expected an object")
    if sealed.get("kdf") != _KDF:
        raise ChatsecError(f"{where}: unsupported kdf {sealed.get('kdf')!r} (expected {_KDF})")
    if sealed.get("cipher") != _CIPHER:
        raise ChatsecError(
            f"{where}: unsupported cipher {sealed.get('cipher')!r} (expected {_CIPHER})"
        )
    n, r, p = (_field_int(sealed, name, where) for name in ("n", "r", "p"))
    if n < 2 or n > _MAX_N or n & (n - 1) or not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
        raise ChatsecError(f"{where}: scrypt parameters n={n} r={r} p={p} out of range")
    if 128 * n * r > _MAX_MEMORY:
        raise ChatsecError(f"{where}: scrypt parameters n={n} r={r} need too much memory")
    salt, nonce, ciphertext = (
        _field_b64(sealed, name, where) for name in ("salt", "nonce", "ciphertext")
    )
    if len(salt) < _MIN_SALT_BYTES or len(nonce) != _NONCE_BYTES:
        raise ChatsecError(f"{where}: salt or nonce has the wrong length")
    try:
        return AESGCM(_derive(passphrase, salt, n, r, p)).decrypt(nonce, ciphertext, _AAD)
    except InvalidTag:
        raise ChatsecError(
            f"cannot unseal keyring {path}: wrong passphrase or corrupted file"
        ) from None


def _field_int(section: dict[str, object], name: str, where: str) -> int:
    value = section.get(name)
    if type(value) is not int:
        raise ChatsecError(f"{where}: {name} must be an integer")
    return value


def _field_b64(section: dict[str, object], name: str, where: str) -> bytes:
    value = section.get(name)
    if not isinstance(value, str):
        raise ChatsecError(f"{where}: {name} must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ChatsecError(f"{where}: {name} is not valid base64") from None
