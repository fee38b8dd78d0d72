"""The encryption keyring: pgcrypto keys kept in a versioned JSON file, optionally sealed."""

from __future__ import annotations

import base64
import binascii
import errno
import json
import os
import re
import secrets
import stat
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal, cast

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chatsec.defaults import DEFAULT_WAIT_S
from chatsec.errors import ChatsecError
from chatsec.files import fsync_dir
from chatsec.keys.filelock import KeyringLock

Status = Literal["active", "previous", "retired", "purged"]
STATUSES: tuple[Status, ...] = ("active", "previous", "retired", "purged")

FORMAT = "chatsec-keyring"
VERSION = 2  # written; READABLE_VERSIONS are read
READABLE_VERSIONS = (1, 2)
KEYRING_ENV = "CHATSEC_KEYRING"
PASSPHRASE_ENV = "CHATSEC_KEYRING_PASSPHRASE"  # noqa: S105 - a variable name

# Ids are stored in a database column next to each ciphertext, so keep them boring.
_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SECRET_BYTES = 32
_HEX_RE = re.compile(r"[0-9a-fA-F]*")
_KEY_FIELDS = frozenset({"id", "created_at", "status", "secret"})
_PURGED_FIELDS = frozenset({"id", "created_at", "status"})
_V1_STATUSES = frozenset({"active", "previous", "retired"})

# A generation fits a PostgreSQL bigint, where the high-water mark is kept.
_MAX_GENERATION = 2**63 - 1

_AAD_V1 = b"chatsec-keyring-v1"
# Version 2 authenticates the whole header: this label, then its canonical JSON.
_AAD_V2_LABEL = b"chatsec-keyring-v2\n"
_CIPHER = "AES-256-GCM"
_KDF = "scrypt"
_SEALED_FIELDS_V2 = frozenset({"kdf", "n", "r", "p", "salt", "cipher", "nonce", "ciphertext"})
# Bounds on parameters read from a file, so a tampered file cannot make load() take
# gigabytes of memory or minutes of CPU before the tag check rejects it.
_MAX_N, _MAX_R, _MAX_P, _MAX_MEMORY = 2**20, 32, 16, 2**30
_MIN_SALT_BYTES = 16
_NONCE_BYTES = 12

# Passphrases for new seals: a length floor plus zxcvbn's guess estimate (about 40 bits).
MIN_PASSPHRASE_CHARS = 12
MIN_PASSPHRASE_GUESSES = 10**12
_ZXCVBN_MAX_CHARS = 72  # zxcvbn refuses longer input; a prefix underestimates, never over
_PASSPHRASE_RULE = (
    f"a new seal needs at least {MIN_PASSPHRASE_CHARS} characters and an estimated "
    f"10^12 guesses (zxcvbn), e.g. 4 or more random words or 16 random characters"
)


@dataclass(frozen=True)
class ScryptCost:
    """scrypt's work parameters: n (a power of two), block size r, parallelism p."""

    n: int
    r: int
    p: int


# At least OWASP's scrypt minimum (n=2^17, r=8, p=1): 128 MiB per guess. Every save uses it.
SCRYPT_COST = ScryptCost(n=2**17, r=8, p=1)
# Only for tests, through `insecure_kdf_for_tests=True`; version 2 files sealed with it are
# refused unless the reader passes the same flag, so they cannot pass for production files.
_TEST_ONLY_SCRYPT_COST = ScryptCost(n=2**10, r=8, p=1)


@dataclass(frozen=True)
class Key:
    """One encryption key; `material` is the pgcrypto passphrase. repr never shows the secret.

    A purged key keeps its id, creation time and status but has no secret (None).
    """

    id: str
    created_at: str
    status: Status
    secret: bytes | None = field(repr=False)

    def __post_init__(self) -> None:
        if not _ID_RE.fullmatch(self.id):
            raise ChatsecError(
                f"bad key id {self.id!r}: expected 1-64 characters from A-Z a-z 0-9 _ -"
            )
        if self.status not in STATUSES:
            raise ChatsecError(
                f"key {self.id} has bad status {self.status!r}: "
                "expected active, previous, retired or purged"
            )
        if self.status == "purged":
            if self.secret is not None:
                raise ChatsecError(f"key {self.id} is purged but still has a secret")
        elif self.secret is None or len(self.secret) != _SECRET_BYTES:
            length = 0 if self.secret is None else len(self.secret)
            raise ChatsecError(
                f"key {self.id} has a {length}-byte secret: expected {_SECRET_BYTES}"
            )
        _parse_timestamp(self.created_at, self.id)

    @property
    def material(self) -> str:
        """The passphrase given to pgp_sym_encrypt/pgp_sym_decrypt: the secret as 64 hex digits."""
        if self.secret is None:
            raise ChatsecError(
                f"key {self.id} was purged: its secret no longer exists, so nothing "
                "encrypted with it can be decrypted"
            )
        return self.secret.hex()

    @property
    def created(self) -> datetime:
        return _parse_timestamp(self.created_at, self.id)

    def to_json(self) -> dict[str, str]:
        entry = {"id": self.id, "created_at": self.created_at, "status": self.status}
        if self.secret is not None:
            entry["secret"] = self.secret.hex()
        return entry


class Keyring:
    """The keys stored at `path`; saved sealed with a passphrase when `sealed` is true.

    `insecure_kdf_for_tests` (everywhere it appears) swaps the scrypt cost for a cheap one
    so test suites stay fast; production code never passes it.
    """

    def __init__(
        self,
        path: Path,
        keys: list[Key] | None = None,
        passphrase: str | None = None,
        *,
        insecure_kdf_for_tests: bool = False,
    ) -> None:
        self._path = path
        self._keys = list(keys or [])
        _check_keys(self._keys, f"keyring {path}")
        self._generation = 0
        self._insecure_kdf_for_tests = insecure_kdf_for_tests
        self._passphrase: str | None = None
        self._lock = KeyringLock(path)
        if passphrase is not None:
            self.seal(passphrase)  # a new keyring is a new seal: the strength rule applies

    def __repr__(self) -> str:
        # Written by hand so the passphrase can never end up in a log line.
        return (
            f"Keyring({str(self._path)!r}, keys={len(self._keys)}, sealed={self.sealed}, "
            f"generation={self._generation})"
        )

    @classmethod
    def empty(
        cls, path: Path, passphrase: str | None = None, *, insecure_kdf_for_tests: bool = False
    ) -> Keyring:
        """A keyring with no keys, not yet written to `path`."""
        return cls(path, [], passphrase, insecure_kdf_for_tests=insecure_kdf_for_tests)

    @classmethod
    def create(
        cls, path: Path, passphrase: str | None = None, *, insecure_kdf_for_tests: bool = False
    ) -> Keyring:
        """Write a new empty keyring at `path`, refusing to overwrite an existing file."""
        # lexists: a dangling symlink is "something there" too.
        if os.path.lexists(path):
            raise ChatsecError(f"keyring {path} already exists")
        keyring = cls.empty(path, passphrase, insecure_kdf_for_tests=insecure_kdf_for_tests)
        keyring.save()
        return keyring

    @classmethod
    def load(
        cls, path: Path, passphrase: str | None = None, *, insecure_kdf_for_tests: bool = False
    ) -> Keyring:
        """Read the keyring at `path`; a passphrase is required for, and only for, sealed files."""
        if passphrase is not None:
            _require_nonempty(passphrase)
        document = _parse_json(_read_private(path), f"keyring {path}")
        parsed = _parse_document(document, path, passphrase, insecure_kdf_for_tests)
        keyring = cls(path, parsed.keys, insecure_kdf_for_tests=insecure_kdf_for_tests)
        keyring._generation = parsed.generation
        # An existing seal keeps its passphrase even if it is weak: only new seals are checked.
        keyring._passphrase = passphrase if parsed.sealed else None
        return keyring

    @classmethod
    def load_or_empty(
        cls, path: Path, passphrase: str | None = None, *, insecure_kdf_for_tests: bool = False
    ) -> Keyring:
        """`load` if `path` exists, else `empty` (sealed if a passphrase is given)."""
        if os.path.lexists(path):
            return cls.load(path, passphrase, insecure_kdf_for_tests=insecure_kdf_for_tests)
        return cls.empty(path, passphrase, insecure_kdf_for_tests=insecure_kdf_for_tests)

    @classmethod
    def seal_existing(
        cls, path: Path, passphrase: str, *, insecure_kdf_for_tests: bool = False
    ) -> Keyring:
        """Seal the unsealed keyring at `path` with `passphrase` and save it (`chatsec keys seal`)."""
        keyring = cls(path, insecure_kdf_for_tests=insecure_kdf_for_tests)
        with keyring.locked(command="keys seal"):
            document = _parse_json(_read_private(path), f"keyring {path}")
            if isinstance(document, dict) and "sealed" in document:
                raise ChatsecError(
                    f"keyring {path} is already sealed: to change its passphrase, load it "
                    "with the current one and seal it with the new one"
                )
            keyring.reload()
            keyring.seal(passphrase)
            keyring.save()
        return keyring

    @classmethod
    def unseal_existing(cls, path: Path, passphrase: str) -> Keyring:
        """Save the sealed keyring at `path` as plain JSON, mode 0600 (`chatsec keys unseal`)."""
        keyring = cls(path, passphrase=passphrase)
        with keyring.locked(command="keys unseal"):
            document = _parse_json(_read_private(path), f"keyring {path}")
            if not (isinstance(document, dict) and "sealed" in document):
                raise ChatsecError(f"keyring {path} is not sealed: nothing to unseal")
            keyring.reload()
            keyring.unseal()
            keyring.save()
        return keyring

    @contextmanager
    def locked(self, wait_s: float | None = None, command: str = "keys") -> Iterator[None]:
        """Hold the keyring's file lock; every read-modify-write happens inside one.

        Waits up to `wait_s` seconds (the database lock's DEFAULT_WAIT_S when None) for another holder. Call
        `reload()` inside it: what was read before may have changed meanwhile.
        """
        self._lock.acquire(DEFAULT_WAIT_S if wait_s is None else wait_s, command)
        try:
            yield
        finally:
            self._lock.release()

    def reload(self) -> None:
        """Read the keys back from the file, as saved now (nothing if never saved yet)."""
        if not os.path.lexists(self._path):
            if self._generation:
                raise ChatsecError(f"keyring {self._path} was removed while in use")
            return
        document = _parse_json(_read_private(self._path), f"keyring {self._path}")
        parsed = _parse_document(
            document, self._path, self._passphrase, self._insecure_kdf_for_tests
        )
        self._keys = parsed.keys
        self._generation = parsed.generation
        if not parsed.sealed:
            self._passphrase = None

    def continue_generations(self, newest: int) -> None:
        """Save the next generation after `newest`: a new keyring for a database whose
        registry has seen an earlier keyring's generations (`keys generate --new-keyring`)."""
        self._generation = max(self._generation, newest)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def sealed(self) -> bool:
        return self._passphrase is not None

    @property
    def generation(self) -> int:
        """The generation of the file this keyring was loaded from or last saved as (0: never)."""
        return self._generation

    @property
    def keys(self) -> list[Key]:
        """Every key, purged records included (they have no secret)."""
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

    def require_generation_at_least(self, minimum: int, *, source: str) -> None:
        """Refuse an old copy: `minimum` is the newest generation `source` has seen saved."""
        if type(minimum) is not int or not 0 <= minimum <= _MAX_GENERATION:
            raise ChatsecError(f"bad keyring generation high-water mark {minimum!r} from {source}")
        if self._generation < minimum:
            raise ChatsecError(
                f"keyring {self._path} is generation {self._generation}, older than generation "
                f"{minimum} recorded in {source}: it is an old or rolled-back copy, use the "
                "newest keyring"
            )

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
        if key.status in ("retired", "purged"):
            # A retired key may have been retired because it leaked; never write with it again.
            raise ChatsecError(
                f"key {key_id} is {key.status} and cannot be activated: generate a new key"
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
        if key.status == "purged":
            raise ChatsecError(f"key {key_id} is already purged from keyring {self._path}")
        return self._set_status(key_id, "retired")

    def unretire(self, key_id: str) -> Key:
        """Bring a retired key back to previous, so it decrypts again; refused once purged."""
        key = self.get(key_id)
        if key.status == "purged":
            raise ChatsecError(
                f"key {key_id} was purged from keyring {self._path}: its secret is gone "
                "and it cannot be brought back"
            )
        if key.status != "retired":
            raise ChatsecError(f"key {key_id} is {key.status}, not retired: nothing to unretire")
        return self._set_status(key_id, "previous")

    def purge(self, key_id: str) -> Key:
        """Delete a retired key's secret for good, keeping a record (crypto-shredding)."""
        key = self.get(key_id)
        if key.status == "purged":
            raise ChatsecError(f"key {key_id} is already purged from keyring {self._path}")
        if key.status != "retired":
            raise ChatsecError(
                f"key {key_id} is {key.status}: only a retired key can be purged, retire it first"
            )
        return self._replace(replace(key, status="purged", secret=None))

    def seal(self, passphrase: str) -> None:
        """Save sealed with `passphrase` from now on (also changes a sealed keyring's passphrase)."""
        self._passphrase = _check_new_passphrase(passphrase)

    def unseal(self) -> None:
        """Save as plain JSON from now on (still mode 0600)."""
        self._passphrase = None

    def save(self) -> None:
        """Write the next generation atomically with mode 0600, sealed if there is a passphrase.

        Under the file lock (taken here if the caller does not hold it).
        """
        with self.locked(command="keys save"):
            self._save()

    def _save(self) -> None:
        generation = self._generation + 1
        if generation > _MAX_GENERATION:
            raise ChatsecError(f"keyring {self._path} has reached its last generation")
        document: dict[str, object] = {"format": FORMAT, "version": VERSION}
        document["generation"] = generation
        entries = [key.to_json() for key in self._keys]
        if self._passphrase is None:
            document["keys"] = entries
        else:
            cost = _TEST_ONLY_SCRYPT_COST if self._insecure_kdf_for_tests else SCRYPT_COST
            plaintext = json.dumps(entries).encode()
            document["sealed"] = _seal(plaintext, self._passphrase, generation, cost)
        _write_private(self._path, (json.dumps(document, indent=2) + "\n").encode())
        # Only once the file holds it, so a failed save leaves the generation as on disk.
        self._generation = generation

    def _demote_active(self) -> None:
        for key in self._keys:
            if key.status == "active":
                self._set_status(key.id, "previous")

    def _set_status(self, key_id: str, status: Status) -> Key:
        return self._replace(replace(self.get(key_id), status=status))

    def _replace(self, new: Key) -> Key:
        for index, key in enumerate(self._keys):
            if key.id == new.id:
                self._keys[index] = new
                return new
        raise ChatsecError(f"keyring {self._path} has no key {new.id!r}")


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


def _normalize(passphrase: str) -> str:
    # NFC so the same passphrase typed on systems that compose accents differently still works.
    return unicodedata.normalize("NFC", passphrase)


def _require_nonempty(passphrase: str) -> str:
    if not passphrase:
        raise ChatsecError("keyring passphrase must not be empty")
    return passphrase


def _check_new_passphrase(passphrase: str) -> str:
    """`passphrase` if it is strong enough for a new seal; the error never quotes it."""
    normalized = _normalize(_require_nonempty(passphrase))
    if len(normalized) < MIN_PASSPHRASE_CHARS:
        raise ChatsecError(f"keyring passphrase is too short: {_PASSPHRASE_RULE}")
    if passphrase_guesses(normalized) < MIN_PASSPHRASE_GUESSES:
        raise ChatsecError(f"keyring passphrase is too easy to guess: {_PASSPHRASE_RULE}")
    return passphrase


def passphrase_guesses(passphrase: str) -> int:
    """zxcvbn's estimate of the guesses needed to find `passphrase` (its first 72 characters)."""
    # Imported here: the dictionaries take ~70 ms to load and only sealing needs them.
    from zxcvbn import zxcvbn  # type: ignore[import-untyped]

    # Context words an attacker would try first count as known words.
    estimate = zxcvbn(passphrase[:_ZXCVBN_MAX_CHARS], user_inputs=["chatsec", "keyring"])
    return int(estimate["guesses"])  # a Decimal; int keeps the comparison exact


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
    # O_NOFOLLOW: a symlink at the path is refused, not followed. O_NONBLOCK: a FIFO
    # planted there cannot hang the open (regular files ignore it).
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ChatsecError(
            f"keyring {path} does not exist: messages encrypted under its keys stay "
            "unreadable without it, and no new key can recover them; restore it from its "
            f"backup (docs/keyring.md), or for a database without keys yet: "
            f"chatsec keys generate --keyring {path}"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ELOOP and os.path.islink(path):
            raise ChatsecError(_symlink_message(path)) from None
        raise ChatsecError(f"cannot read keyring {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as handle:
        # fstat on the open file, not stat on the name, so the checked file is the one read.
        st = os.fstat(handle.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise ChatsecError(f"keyring {path} is not a regular file")
        _check_owner(path, st.st_uid)
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


def _symlink_message(path: Path) -> str:
    return f"keyring {path} is a symbolic link: refusing it, give the path of the real file"


def _check_owner(path: Path, uid: int) -> None:
    # Even root refuses: a file someone else owns may have been planted or swapped in.
    euid = os.geteuid()
    if uid != euid:
        raise ChatsecError(
            f"keyring {path} is owned by uid {uid}, not by the current user (uid {euid}): "
            f"if it is yours, chown {euid} {path}"
        )


def _check_replaceable(path: Path) -> None:
    """Refuse to save over a symlink, a non-file or a file owned by someone else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise ChatsecError(f"cannot write keyring {path}: {exc.strerror}") from None
    if stat.S_ISLNK(st.st_mode):
        raise ChatsecError(_symlink_message(path))
    if not stat.S_ISREG(st.st_mode):
        raise ChatsecError(f"keyring {path} is not a regular file")
    _check_owner(path, st.st_uid)


def _write_private(path: Path, data: bytes) -> None:
    # os.replace would silently swap a symlink for a file; refuse instead. A link planted
    # after this check is replaced, never written through, since rename does not follow it.
    _check_replaceable(path)
    # A temp file in the same directory makes os.replace atomic; O_EXCL refuses to
    # follow a planted symlink, and 0600 means the secret is never briefly world-readable.
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    flags = os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o600)
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
    fsync_dir(path.parent)


def _parse_json(raw: bytes, where: str) -> object:
    try:
        return cast(object, json.loads(raw.decode("utf-8")))
    except UnicodeDecodeError:
        raise ChatsecError(f"{where} is not valid JSON: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ChatsecError(
            f"{where} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None


@dataclass(frozen=True)
class _Parsed:
    """What a keyring file holds once read and, if sealed, unsealed."""

    keys: list[Key]
    generation: int
    sealed: bool


def _parse_document(
    document: object, path: Path, passphrase: str | None, insecure_kdf_for_tests: bool
) -> _Parsed:
    where = f"keyring {path}"
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise ChatsecError(f'{path} is not a chatsec keyring (no "format": "{FORMAT}")')
    header = cast(dict[str, object], document)
    version = _parse_version(header.get("version"), where)
    expected = {"format", "version"} if version == 1 else {"format", "version", "generation"}
    missing = expected - set(header)
    if missing:
        raise ChatsecError(f"{where} has no {', '.join(sorted(missing))}")
    body = set(header) - expected
    if body not in ({"keys"}, {"sealed"}):
        found = ", ".join(sorted(body)) or "nothing"
        raise ChatsecError(f'{where} must have exactly one of "keys" or "sealed" (found {found})')
    generation = 0 if version == 1 else _parse_generation(header["generation"], where)
    if "keys" in header:
        if passphrase is not None:
            # Never load plain secrets as if they were sealed, nor save them back unsealed.
            raise ChatsecError(
                f"keyring {path} is not sealed but {PASSPHRASE_ENV} is set: seal it with "
                f"chatsec keys seal --keyring {path}, or unset {PASSPHRASE_ENV}"
            )
        return _Parsed(_parse_keys(header["keys"], where, version), generation, False)
    if passphrase is None:
        raise ChatsecError(f"{where} is sealed: set {PASSPHRASE_ENV} to its passphrase")
    if version == 1:
        plaintext = _unseal_v1(header["sealed"], passphrase, path)
    else:
        plaintext = _unseal_v2(
            header["sealed"], generation, passphrase, path, insecure_kdf_for_tests
        )
    entries = _parse_json(plaintext, f"sealed {where}")
    return _Parsed(_parse_keys(entries, where, version), generation, True)


def _parse_version(version: object, where: str) -> int:
    # type() rather than ==, since True == 1 in Python.
    if type(version) is not int or version not in READABLE_VERSIONS:
        readable = " and ".join(str(v) for v in READABLE_VERSIONS)
        raise ChatsecError(
            f"{where} has unsupported version {version!r}: this chatsec reads versions {readable}"
        )
    return version


def _parse_generation(generation: object, where: str) -> int:
    if type(generation) is not int or not 0 <= generation <= _MAX_GENERATION:
        raise ChatsecError(
            f"{where} has bad generation {generation!r}: expected an integer from 0 to 2^63-1"
        )
    return generation


def _parse_keys(entries: object, where: str, version: int) -> list[Key]:
    if not isinstance(entries, list):
        raise ChatsecError(f'{where}: "keys" must be a list')
    keys = [
        _parse_key(entry, f"{where}, key #{index + 1}", version)
        for index, entry in enumerate(entries)
    ]
    _check_keys(keys, where)
    return keys


def _parse_key(entry: object, where: str, version: int) -> Key:
    if not isinstance(entry, dict):
        raise ChatsecError(f"{where}: expected an object")
    purged = entry.get("status") == "purged" and version >= 2
    expected = _PURGED_FIELDS if purged else _KEY_FIELDS
    if set(entry) != expected:
        names = ", ".join(sorted(expected))
        raise ChatsecError(f"{where}: expected an object with exactly the fields {names}")
    if not all(isinstance(value, str) for value in entry.values()):
        raise ChatsecError(f"{where}: every field must be a string")
    fields = cast(dict[str, str], entry)
    if version == 1 and fields["status"] not in _V1_STATUSES:
        raise ChatsecError(
            f"{where}: bad status {fields['status']!r}: expected active, previous or retired"
        )
    secret = None if purged else _parse_secret(fields["secret"], where)
    try:
        return Key(
            id=fields["id"],
            created_at=fields["created_at"],
            status=cast(Status, fields["status"]),
            secret=secret,
        )
    except ChatsecError as exc:
        raise ChatsecError(f"{where}: {exc}") from None


def _parse_secret(secret: str, where: str) -> bytes:
    # Never echo the secret itself in an error, only what is wrong with it.
    if len(secret) != 2 * _SECRET_BYTES:
        raise ChatsecError(
            f"{where}: secret is {len(secret)} characters, expected {2 * _SECRET_BYTES} hex digits"
        )
    if not _HEX_RE.fullmatch(secret):
        raise ChatsecError(f"{where}: secret is not hexadecimal")
    return bytes.fromhex(secret)


def _derive(passphrase: str, salt: bytes, cost: ScryptCost) -> bytes:
    secret = _normalize(passphrase).encode("utf-8")
    return Scrypt(salt=salt, length=32, n=cost.n, r=cost.r, p=cost.p).derive(secret)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _aad_v2(generation: int, header: dict[str, object]) -> bytes:
    """The associated data of a version 2 seal: every header field, as canonical JSON."""
    bound = {"format": FORMAT, "version": 2, "generation": generation, "sealed": header}
    canonical = json.dumps(bound, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return _AAD_V2_LABEL + canonical.encode("ascii")


def _seal(
    plaintext: bytes, passphrase: str, generation: int, cost: ScryptCost
) -> dict[str, object]:
    # Fresh salt on every save, so each save also gets a fresh AES key and nonce reuse is moot.
    salt = secrets.token_bytes(_MIN_SALT_BYTES)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    header: dict[str, object] = {
        "kdf": _KDF,
        "n": cost.n,
        "r": cost.r,
        "p": cost.p,
        "salt": _b64(salt),
        "cipher": _CIPHER,
        "nonce": _b64(nonce),
    }
    key = _derive(passphrase, salt, cost)
    ciphertext = AESGCM(key).encrypt(nonce, plaintext, _aad_v2(generation, header))
    return {**header, "ciphertext": _b64(ciphertext)}


@dataclass(frozen=True)
class _SealedSection:
    """A validated "sealed" object: the cost, salt, nonce and ciphertext, decoded."""

    cost: ScryptCost
    salt: bytes
    nonce: bytes
    ciphertext: bytes


def _parse_sealed(sealed: object, where: str) -> _SealedSection:
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
    return _SealedSection(ScryptCost(n, r, p), salt, nonce, ciphertext)


def _decrypt(section: _SealedSection, passphrase: str, aad: bytes, path: Path) -> bytes:
    key = _derive(passphrase, section.salt, section.cost)
    try:
        return AESGCM(key).decrypt(section.nonce, section.ciphertext, aad)
    except InvalidTag:
        # GCM cannot tell a wrong passphrase from a modified file; neither can we.
        raise ChatsecError(
            f"cannot unseal keyring {path}: wrong passphrase or corrupted file"
        ) from None


def _unseal_v1(sealed: object, passphrase: str, path: Path) -> bytes:
    section = _parse_sealed(sealed, f'keyring {path} has a bad "sealed" section')
    return _decrypt(section, passphrase, _AAD_V1, path)


def _unseal_v2(
    sealed: object, generation: int, passphrase: str, path: Path, insecure_kdf_for_tests: bool
) -> bytes:
    where = f'keyring {path} has a bad "sealed" section'
    section = _parse_sealed(sealed, where)
    fields = cast(dict[str, object], sealed)
    if set(fields) != _SEALED_FIELDS_V2:
        raise ChatsecError(
            f"{where}: expected exactly the fields {', '.join(sorted(_SEALED_FIELDS_V2))}"
        )
    cost = section.cost
    # Checked before the expensive derivation; a cheap test seal never passes for a real one.
    if not insecure_kdf_for_tests and (cost.n < SCRYPT_COST.n or cost.r < SCRYPT_COST.r):
        raise ChatsecError(
            f"{where}: scrypt n={cost.n} r={cost.r} is below version 2's minimum "
            f"n={SCRYPT_COST.n} r={SCRYPT_COST.r}"
        )
    header = {name: value for name, value in fields.items() if name != "ciphertext"}
    return _decrypt(section, passphrase, _aad_v2(generation, header), path)


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
