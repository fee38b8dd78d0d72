"""The keyring file: round trips, sealing, file modes, rotation and malformed input."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import secrets
import signal
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from chatsec.errors import ChatsecError
from chatsec.keys import Keyring, passphrase_from_env, resolve_keyring_path
from chatsec.keys import keyring as keyring_module

PASSPHRASE = "correct horse battery staple"
# Sealing at the production scrypt cost takes ~0.6 s here; tests that are not about the
# cost itself seal at the cheap, test-only cost.
FAST: dict[str, Any] = {"insecure_kdf_for_tests": True}
OTHER_UID = 65534  # nobody
SRC = Path(__file__).resolve().parents[1] / "src"


def _write(path: Path, document: Any, mode: int = 0o600) -> Path:
    path.write_text(json.dumps(document))
    path.chmod(mode)
    return path


def _key_entry(**overrides: str) -> dict[str, str]:
    entry = {
        "id": "k20261125-0a1b2c3d",
        "created_at": "2026-11-25T10:00:00Z",
        "status": "active",
        "secret": "ab" * 32,
    }
    entry.update(overrides)
    return entry


def _plain(keys: list[Any], version: int = 1, **extra: Any) -> dict[str, Any]:
    return {"format": "chatsec-keyring", "version": version, **extra, "keys": keys}


def _write_v1_sealed(
    path: Path, entries: list[dict[str, str]], passphrase: str, n: int = 2**15
) -> Path:
    """A sealed version-1 file exactly as the previous chatsec wrote it (n = 2^15 then)."""
    salt, nonce = secrets.token_bytes(16), secrets.token_bytes(12)
    key = Scrypt(salt=salt, length=32, n=n, r=8, p=1).derive(passphrase.encode())
    ciphertext = AESGCM(key).encrypt(nonce, json.dumps(entries).encode(), b"chatsec-keyring-v1")
    sealed = {
        "kdf": "scrypt",
        "n": n,
        "r": 8,
        "p": 1,
        "salt": base64.b64encode(salt).decode(),
        "cipher": "AES-256-GCM",
        "nonce": base64.b64encode(nonce).decode(),
        "ciphertext": base64.b64encode(ciphertext).decode(),
    }
    return _write(path, {"format": "chatsec-keyring", "version": 1, "sealed": sealed})


def _error(excinfo: pytest.ExceptionInfo[ChatsecError], *secrets_: str) -> str:
    """The error's message, checked to be one line that quotes none of `secrets_`."""
    message = str(excinfo.value)
    assert "\n" not in message
    for secret in secrets_:
        assert secret not in message
    return message


def _give_away(path: Path) -> None:
    """Make `path` (not a link's target) belong to another user; needs root."""
    try:
        os.chown(path, OTHER_UID, -1, follow_symlinks=False)
    except PermissionError:
        pytest.skip("only root can give a file to another user")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


@pytest.fixture
def sealed_on_disk(path: Path) -> Keyring:
    """A fast-sealed keyring with one key, saved once (generation 1)."""
    keyring = Keyring.empty(path, PASSPHRASE, **FAST)
    keyring.generate()
    keyring.save()
    return keyring


def test_generate_save_load_round_trip(path: Path) -> None:
    keyring = Keyring.empty(path)
    first = keyring.generate()
    second = keyring.generate()
    keyring.save()

    loaded = Keyring.load(path)
    assert loaded.keys == [dataclasses.replace(first, status="previous"), second]
    assert loaded.active == second
    assert not loaded.sealed
    assert len(second.material) == 64
    assert second.secret is not None and bytes.fromhex(second.material) == second.secret
    assert first.id != second.id
    document = json.loads(path.read_text())
    assert document["format"] == "chatsec-keyring"
    assert document["version"] == 2
    assert document["generation"] == 1
    assert document["keys"][1] == {
        "id": second.id,
        "created_at": second.created_at,
        "status": "active",
        "secret": second.material,
    }


def test_generated_key_shape(path: Path) -> None:
    key = Keyring.empty(path).generate()
    assert key.id.startswith("k") and len(key.id) <= 64
    assert key.created.utcoffset() is not None
    assert key.secret is not None and len(key.secret) == 32


def test_saved_file_is_private_and_no_temp_files_remain(path: Path) -> None:
    keyring = Keyring.empty(path)
    keyring.generate()
    keyring.save()
    keyring.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # The lock file stays (it holds no secret); no temporary file does.
    assert sorted(p.name for p in path.parent.iterdir()) == [".keyring.json.lock", "keyring.json"]


def test_save_replaces_a_group_readable_file_with_a_private_one(path: Path) -> None:
    _write(path, _plain([]), mode=0o644)
    Keyring.empty(path).save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_create_refuses_to_overwrite(path: Path) -> None:
    Keyring.create(path)
    assert Keyring.load(path).keys == []
    with pytest.raises(ChatsecError, match="already exists"):
        Keyring.create(path)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_load_refuses_files_open_to_others(path: Path, mode: int) -> None:
    _write(path, _plain([]), mode=mode)
    with pytest.raises(ChatsecError) as excinfo:
        Keyring.load(path)
    message = str(excinfo.value)
    assert f"(mode {mode:04o}): chmod 600 {path}" in message
    if mode == 0o644:
        assert message == f"keyring {path} is readable by others (mode 0644): chmod 600 {path}"


def test_load_missing_file(path: Path) -> None:
    with pytest.raises(ChatsecError) as excinfo:
        Keyring.load(path)
    assert str(excinfo.value) == (
        f"keyring {path} does not exist: messages encrypted under its keys stay "
        "unreadable without it, and no new key can recover them; restore it from its "
        f"backup (docs/keyring.md), or for a database without keys yet: "
        f"chatsec keys generate --keyring {path}"
    )


def test_load_or_empty(path: Path) -> None:
    fresh = Keyring.load_or_empty(path, PASSPHRASE, **FAST)
    assert fresh.sealed and fresh.keys == []
    key = fresh.generate()
    fresh.save()
    assert Keyring.load_or_empty(path, PASSPHRASE, **FAST).active == key


def test_sealed_round_trip_keeps_sealing(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE, **FAST)
    key = keyring.generate()
    keyring.save()

    loaded = Keyring.load(path, PASSPHRASE, **FAST)
    assert loaded.sealed
    assert loaded.active == key
    loaded.generate()
    loaded.save()  # saved again with the passphrase it was loaded with

    document = json.loads(path.read_text())
    assert "keys" not in document
    assert document["version"] == 2
    sealed = document["sealed"]
    assert sealed["kdf"] == "scrypt"
    assert (sealed["n"], sealed["r"], sealed["p"]) == (2**10, 8, 1)  # the test-only cost
    assert sealed["cipher"] == "AES-256-GCM"
    assert len(Keyring.load(path, PASSPHRASE, **FAST).keys) == 2


def test_seal_and_unseal_an_existing_keyring(path: Path) -> None:
    keyring = Keyring.empty(path)
    key = keyring.generate()
    keyring.save()
    plain = Keyring.load(path, **FAST)
    assert not plain.sealed

    plain.seal(PASSPHRASE)
    plain.save()
    assert "sealed" in json.loads(path.read_text())
    resealed = Keyring.load(path, PASSPHRASE, **FAST)
    resealed.unseal()
    resealed.save()
    assert Keyring.load(path).active == key


def test_sealed_file_does_not_contain_the_secret(sealed_on_disk: Keyring, path: Path) -> None:
    key = sealed_on_disk.active
    raw = path.read_bytes()
    assert key.secret is not None
    assert key.material.encode() not in raw
    assert key.material.upper().encode() not in raw
    assert key.secret not in raw
    assert PASSPHRASE.encode() not in raw


def test_wrong_passphrase_fails_cleanly(sealed_on_disk: Keyring, path: Path) -> None:
    with pytest.raises(ChatsecError) as excinfo:
        Keyring.load(path, "not the passphrase", **FAST)
    assert _error(excinfo, "not the passphrase", PASSPHRASE) == (
        f"cannot unseal keyring {path}: wrong passphrase or corrupted file"
    )


def test_tampered_ciphertext_fails_cleanly(sealed_on_disk: Keyring, path: Path) -> None:
    document = json.loads(path.read_text())
    ciphertext = bytearray(base64.b64decode(document["sealed"]["ciphertext"]))
    ciphertext[0] ^= 1
    document["sealed"]["ciphertext"] = base64.b64encode(ciphertext).decode()
    _write(path, document)
    with pytest.raises(ChatsecError, match="wrong passphrase or corrupted file"):
        Keyring.load(path, PASSPHRASE, **FAST)


def test_sealed_file_without_passphrase_names_the_variable(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE, **FAST)
    keyring.save()
    with pytest.raises(ChatsecError, match="CHATSEC_KEYRING_PASSPHRASE"):
        Keyring.load(path)


def test_empty_passphrase_is_refused(path: Path) -> None:
    with pytest.raises(ChatsecError, match="must not be empty"):
        Keyring.empty(path, "")
    with pytest.raises(ChatsecError, match="must not be empty"):
        Keyring.empty(path).seal("")


# --- 1. scrypt cost -------------------------------------------------------------------


def test_default_seal_meets_scrypt_guidance_and_upgrades_version_1(path: Path) -> None:
    """Production cost: a v1 file sealed at n=2^15 is rewritten at n>=2^17, r=8, p=1."""
    _write_v1_sealed(path, [_key_entry()], PASSPHRASE)  # the old default, n = 2^15
    keyring = Keyring.load(path, PASSPHRASE)
    keyring.save()

    document = json.loads(path.read_text())
    assert document["version"] == 2
    sealed = document["sealed"]
    assert sealed["n"] >= 2**17 and (sealed["r"], sealed["p"]) == (8, 1)
    assert keyring_module.SCRYPT_COST.n >= 2**17
    reloaded = Keyring.load(path, PASSPHRASE)
    assert reloaded.active.material == "ab" * 32
    assert reloaded.generation == 1


def test_test_only_cost_never_passes_for_a_production_file(
    sealed_on_disk: Keyring, path: Path
) -> None:
    with pytest.raises(ChatsecError) as excinfo:
        Keyring.load(path, PASSPHRASE)  # production reader
    assert "below version 2's minimum n=131072 r=8" in _error(excinfo, PASSPHRASE)


def test_production_code_never_passes_the_test_only_flag() -> None:
    users = [
        file.relative_to(SRC).as_posix()
        for file in SRC.rglob("*.py")
        if "insecure_kdf_for_tests" in file.read_text()
    ]
    assert users == ["chatsec/keys/keyring.py"]


# --- 2. passphrase strength for new seals -----------------------------------------------

WEAK = [
    "password1234",  # 12 characters, but a common password
    "Summer2024!Summer",  # 17 characters, about 10^10 guesses
    "aaaaaaaaaaaaaaaa",
    "qwertyuiopasdf",
    "chatsec keyring",  # context words count as known
]


@pytest.mark.parametrize("weak", WEAK)
def test_weak_passphrase_is_refused_for_a_new_seal(path: Path, weak: str) -> None:
    attempts = [
        lambda: Keyring.empty(path, weak, **FAST),
        lambda: Keyring.load_or_empty(path, weak, **FAST),
        lambda: Keyring.create(path, weak, **FAST),
        lambda: Keyring.empty(path).seal(weak),
    ]
    for attempt in attempts:
        with pytest.raises(ChatsecError) as excinfo:
            attempt()
        assert _error(excinfo, weak) == (
            "keyring passphrase is too easy to guess: a new seal needs at least 12 characters "
            "and an estimated 10^12 guesses (zxcvbn), e.g. 4 or more random words or "
            "16 random characters"
        )
    assert not os.path.lexists(path)  # create() wrote nothing


def test_passphrase_length_floor_is_exactly_12_characters(path: Path) -> None:
    twelve = "x7Kp2mQ9vL4z"  # random characters: zxcvbn estimates just over 10^12
    keyring = Keyring.empty(path)
    keyring.seal(twelve)
    assert keyring.sealed
    with pytest.raises(ChatsecError) as excinfo:
        keyring.seal(twelve[:-1])
    assert _error(excinfo, twelve[:-1]).startswith("keyring passphrase is too short: ")
    assert (
        keyring_module.passphrase_guesses(twelve)
        >= 10**12
        > (keyring_module.passphrase_guesses(twelve[:-1]))
    )


def test_long_passphrase_is_estimated_not_refused(path: Path) -> None:
    long = "correct horse battery staple " * 4  # longer than zxcvbn's 72 characters
    assert Keyring.empty(path, long, **FAST).sealed


def test_existing_seal_with_a_weak_passphrase_still_loads_and_saves(path: Path) -> None:
    weak = "hunter2"
    _write_v1_sealed(path, [_key_entry()], weak, n=2**10)
    keyring = Keyring.load(path, weak, **FAST)  # loading never checks strength
    assert keyring.sealed and keyring.active.material == "ab" * 32
    keyring.save()  # nor does saving with the passphrase it was loaded with
    again = Keyring.load(path, weak, **FAST)
    assert again.generation == 1 and json.loads(path.read_text())["version"] == 2
    with pytest.raises(ChatsecError, match="too short"):
        again.seal(weak)  # sealing anew (or changing the passphrase) does


# --- 3. the header is associated data ---------------------------------------------------


def _reseal_field(document: dict[str, Any], name: str) -> None:
    """Change one header field of a sealed v2 document to another well-formed value."""
    sealed = document["sealed"]
    if name == "generation":
        document["generation"] += 1
    elif name == "generation-down":
        document["generation"] -= 1
    elif name in ("salt", "nonce"):
        raw = bytearray(base64.b64decode(sealed[name]))
        raw[-1] ^= 1
        sealed[name] = base64.b64encode(raw).decode()
    elif name == "n":
        sealed["n"] *= 2
    else:
        sealed[name] += 1


@pytest.mark.parametrize("name", ["generation", "generation-down", "n", "r", "p", "salt", "nonce"])
def test_every_header_field_is_authenticated(
    sealed_on_disk: Keyring, path: Path, name: str
) -> None:
    sealed_on_disk.save()  # generation 2, so it can go down too
    document = json.loads(path.read_text())
    _reseal_field(document, name)
    _write(path, document)
    with pytest.raises(ChatsecError) as excinfo:
        Keyring.load(path, PASSPHRASE, **FAST)
    assert _error(excinfo, PASSPHRASE) == (
        f"cannot unseal keyring {path}: wrong passphrase or corrupted file"
    )


def test_version_cannot_be_lowered_to_skip_the_header_binding(
    sealed_on_disk: Keyring, path: Path
) -> None:
    document = json.loads(path.read_text())
    del document["generation"]
    document["version"] = 1  # a v1 reader binds no header; the tag still fails
    _write(path, document)
    with pytest.raises(ChatsecError, match="wrong passphrase or corrupted file"):
        Keyring.load(path, PASSPHRASE, **FAST)


def test_documented_v2_format_decrypts_with_cryptography_alone(
    sealed_on_disk: Keyring, path: Path
) -> None:
    """docs/keyring.md's recipe: scrypt, then AES-GCM with the canonical header as AAD."""
    document = json.loads(path.read_text())
    sealed = document["sealed"]
    header = {name: value for name, value in sealed.items() if name != "ciphertext"}
    bound = {"format": document["format"], "version": 2, "generation": 1, "sealed": header}
    aad = b"chatsec-keyring-v2\n" + json.dumps(bound, sort_keys=True, separators=(",", ":")).encode(
        "ascii"
    )
    key = Scrypt(
        salt=base64.b64decode(sealed["salt"]), length=32, n=sealed["n"], r=sealed["r"], p=1
    ).derive(PASSPHRASE.encode())
    plaintext = AESGCM(key).decrypt(
        base64.b64decode(sealed["nonce"]), base64.b64decode(sealed["ciphertext"]), aad
    )
    assert json.loads(plaintext) == [sealed_on_disk.active.to_json()]


def test_v2_sealed_section_refuses_unknown_fields(sealed_on_disk: Keyring, path: Path) -> None:
    document = json.loads(path.read_text())
    document["sealed"]["note"] = "unauthenticated"
    _write(path, document)
    with pytest.raises(ChatsecError, match="expected exactly the fields"):
        Keyring.load(path, PASSPHRASE, **FAST)


# --- 4. never load an unsealed file as if it were sealed --------------------------------


def test_unsealed_file_with_a_passphrase_is_refused(path: Path) -> None:
    keyring = Keyring.empty(path)
    keyring.generate()
    keyring.save()
    before = path.read_bytes()
    for attempt in (Keyring.load, Keyring.load_or_empty):
        with pytest.raises(ChatsecError) as excinfo:
            attempt(path, PASSPHRASE)
        assert _error(excinfo, PASSPHRASE) == (
            f"keyring {path} is not sealed but CHATSEC_KEYRING_PASSPHRASE is set: seal it "
            f"with chatsec keys seal --keyring {path}, or unset CHATSEC_KEYRING_PASSPHRASE"
        )
    assert path.read_bytes() == before


def test_unsealed_version_1_file_with_a_passphrase_is_refused(path: Path) -> None:
    _write(path, _plain([_key_entry()]))
    with pytest.raises(ChatsecError, match="is not sealed but CHATSEC_KEYRING_PASSPHRASE"):
        Keyring.load(path, PASSPHRASE)


def test_seal_existing(path: Path) -> None:
    plain = Keyring.empty(path)
    key = plain.generate()
    plain.save()

    sealed = Keyring.seal_existing(path, PASSPHRASE, **FAST)
    assert sealed.sealed and sealed.generation == 2
    document = json.loads(path.read_text())
    assert set(document) == {"format", "version", "generation", "sealed"}
    assert key.material.encode() not in path.read_bytes()
    assert Keyring.load(path, PASSPHRASE, **FAST).active == key

    with pytest.raises(ChatsecError, match="is already sealed"):
        Keyring.seal_existing(path, PASSPHRASE, **FAST)


def test_seal_existing_refuses_a_weak_passphrase_and_leaves_the_file(path: Path) -> None:
    Keyring.create(path)
    before = path.read_bytes()
    with pytest.raises(ChatsecError, match="too easy to guess"):
        Keyring.seal_existing(path, "password1234", **FAST)
    assert path.read_bytes() == before


# --- 5. generation ----------------------------------------------------------------------


@pytest.mark.parametrize("passphrase", [None, PASSPHRASE])
def test_generation_increases_on_every_save(path: Path, passphrase: str | None) -> None:
    keyring = Keyring.empty(path, passphrase, **FAST)
    assert keyring.generation == 0
    for expected in (1, 2, 3):
        keyring.save()
        assert keyring.generation == expected
        assert json.loads(path.read_text())["generation"] == expected
    assert Keyring.load(path, passphrase, **FAST).generation == 3


def test_version_1_files_read_as_generation_0(path: Path, tmp_path: Path) -> None:
    _write(path, _plain([_key_entry()]))
    plain = Keyring.load(path)
    assert plain.generation == 0
    plain.save()
    document = json.loads(path.read_text())
    assert (document["version"], document["generation"]) == (2, 1)

    sealed_path = _write_v1_sealed(tmp_path / "sealed.json", [_key_entry()], PASSPHRASE, n=2**10)
    assert Keyring.load(sealed_path, PASSPHRASE, **FAST).generation == 0


def test_require_generation_at_least(path: Path) -> None:
    keyring = Keyring.empty(path)
    keyring.save()
    keyring.save()
    keyring.save()
    loaded = Keyring.load(path)
    loaded.require_generation_at_least(3, source="the database registry")  # equal: fine
    loaded.require_generation_at_least(0, source="the database registry")
    with pytest.raises(ChatsecError) as excinfo:
        loaded.require_generation_at_least(4, source="the database registry")
    assert _error(excinfo) == (
        f"keyring {path} is generation 3, older than generation 4 recorded in the database "
        "registry: it is an old or rolled-back copy, use the newest keyring"
    )
    for bad in (-1, True, 2**63):
        with pytest.raises(ChatsecError, match="bad keyring generation high-water mark"):
            loaded.require_generation_at_least(bad, source="the database registry")


def test_restored_old_copy_is_caught_by_the_high_water_mark(
    sealed_on_disk: Keyring, path: Path
) -> None:
    old_copy = path.read_bytes()  # generation 1, e.g. in a backup
    sealed_on_disk.generate()
    sealed_on_disk.save()
    high_water = sealed_on_disk.generation  # what the database would have recorded: 2
    path.write_bytes(old_copy)
    with pytest.raises(ChatsecError, match="is generation 1, older than generation 2"):
        Keyring.load(path, PASSPHRASE, **FAST).require_generation_at_least(
            high_water, source="the database registry"
        )


def test_failed_save_keeps_the_generation(tmp_path: Path) -> None:
    keyring = Keyring.empty(tmp_path / "missing" / "keyring.json")
    with pytest.raises(ChatsecError, match="cannot write keyring"):
        keyring.save()
    assert keyring.generation == 0


@pytest.mark.parametrize("generation", [-1, "3", True, 1.0, 2**63])
def test_bad_generation_is_refused(path: Path, generation: Any) -> None:
    _write(path, _plain([], version=2, generation=generation))
    with pytest.raises(ChatsecError, match="bad generation"):
        Keyring.load(path)


# --- 6. owner and symlinks --------------------------------------------------------------


def test_load_refuses_a_file_owned_by_another_user(path: Path) -> None:
    Keyring.create(path)
    _give_away(path)
    with pytest.raises(ChatsecError) as excinfo:
        Keyring.load(path)
    euid = os.geteuid()
    assert _error(excinfo) == (
        f"keyring {path} is owned by uid {OTHER_UID}, not by the current user (uid {euid}): "
        f"if it is yours, chown {euid} {path}"
    )


def test_save_refuses_to_replace_a_file_owned_by_another_user(path: Path) -> None:
    keyring = Keyring.create(path)
    _give_away(path)
    before = path.read_bytes()
    with pytest.raises(ChatsecError, match=f"is owned by uid {OTHER_UID}"):
        keyring.save()
    assert path.read_bytes() == before and path.stat().st_uid == OTHER_UID
    assert sorted(p.name for p in path.parent.iterdir()) == [".keyring.json.lock", "keyring.json"]


def test_load_refuses_a_symlink_even_to_a_good_keyring(path: Path, tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    Keyring.create(target)
    path.symlink_to(target)
    for attempt in (Keyring.load, Keyring.load_or_empty):
        with pytest.raises(ChatsecError) as excinfo:
            attempt(path)
        assert _error(excinfo) == (
            f"keyring {path} is a symbolic link: refusing it, give the path of the real file"
        )


def test_save_refuses_a_symlink_and_leaves_link_and_target(path: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    Keyring.create(target)
    target_before = target.read_bytes()
    path.symlink_to(target)
    keyring = Keyring.empty(path)
    keyring.generate()
    with pytest.raises(ChatsecError, match="is a symbolic link"):
        keyring.save()
    assert path.is_symlink() and target.read_bytes() == target_before


def test_dangling_symlink_is_refused_not_created_through(path: Path, tmp_path: Path) -> None:
    target = tmp_path / "planted.json"
    path.symlink_to(target)
    with pytest.raises(ChatsecError, match="already exists"):
        Keyring.create(path)
    with pytest.raises(ChatsecError, match="is a symbolic link"):
        Keyring.load_or_empty(path)
    with pytest.raises(ChatsecError, match="is a symbolic link"):
        Keyring.empty(path).save()
    assert not target.exists()


@pytest.fixture
def alarm() -> Iterator[None]:
    """Fail a test that would block forever instead of hanging the suite."""

    class Blocked(Exception):
        """Not an OSError, so no error handler in the code under test can swallow it."""

    def timeout(signum: int, frame: object) -> None:
        raise Blocked("the keyring call blocked for 5 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.usefixtures("alarm")
def test_fifo_is_refused_without_blocking(path: Path) -> None:
    os.mkfifo(path, 0o600)
    with pytest.raises(ChatsecError, match="is not a regular file"):
        Keyring.load(path)
    with pytest.raises(ChatsecError, match="is not a regular file"):
        Keyring.empty(path).save()


# --- 7. unretire and purge --------------------------------------------------------------


def test_unretire_brings_a_retired_key_back_to_previous(path: Path) -> None:
    keyring = Keyring.empty(path)
    old = keyring.generate()
    new = keyring.generate()
    keyring.retire(old.id)
    assert keyring.readable_keys == [new]

    back = keyring.unretire(old.id)
    assert back.status == "previous" and back.secret == old.secret
    assert keyring.readable_keys == [new, back]
    for key_id, status in ((old.id, "previous"), (new.id, "active")):
        with pytest.raises(ChatsecError) as excinfo:
            keyring.unretire(key_id)
        assert _error(excinfo, old.material, new.material) == (
            f"key {key_id} is {status}, not retired: nothing to unretire"
        )


def test_purge_shreds_the_secret_and_keeps_a_record(path: Path) -> None:
    keyring = Keyring.empty(path)
    old = keyring.generate()
    new = keyring.generate()
    keyring.retire(old.id)

    record = keyring.purge(old.id)
    assert (record.id, record.created_at, record.status, record.secret) == (
        old.id,
        old.created_at,
        "purged",
        None,
    )
    assert keyring.get(old.id) == record and record in keyring.keys
    assert keyring.readable_keys == [new]
    with pytest.raises(ChatsecError) as excinfo:
        _ = record.material
    assert _error(excinfo, old.material) == (
        f"key {old.id} was purged: its secret no longer exists, so nothing encrypted "
        "with it can be decrypted"
    )

    keyring.save()
    assert old.material not in path.read_text()
    assert json.loads(path.read_text())["keys"][0] == {
        "id": old.id,
        "created_at": old.created_at,
        "status": "purged",
    }
    assert Keyring.load(path).get(old.id) == record


@pytest.mark.parametrize("status", ["active", "previous"])
def test_purge_refuses_a_key_that_is_not_retired(path: Path, status: str) -> None:
    keyring = Keyring.empty(path)
    keyring.generate(activate=status == "active")
    key_id = keyring.keys[0].id
    with pytest.raises(ChatsecError) as excinfo:
        keyring.purge(key_id)
    assert _error(excinfo, keyring.keys[0].material) == (
        f"key {key_id} is {status}: only a retired key can be purged, retire it first"
    )
    assert keyring.get(key_id).status == status


def test_a_purged_key_stays_purged(path: Path) -> None:
    keyring = Keyring.empty(path)
    old = keyring.generate()
    keyring.generate()
    keyring.retire(old.id)
    keyring.purge(old.id)
    with pytest.raises(ChatsecError, match="was purged .* cannot be brought back"):
        keyring.unretire(old.id)
    with pytest.raises(ChatsecError, match="is already purged"):
        keyring.purge(old.id)
    with pytest.raises(ChatsecError, match="is already purged"):
        keyring.retire(old.id)
    with pytest.raises(ChatsecError, match="is purged and cannot be activated"):
        keyring.activate(old.id)
    assert keyring.get(old.id).status == "purged"


def test_purging_the_last_retired_key_sealed(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE, **FAST)
    first = keyring.generate()
    active = keyring.generate()
    keyring.retire(first.id)
    keyring.purge(first.id)  # the only retired key: none is left with a secret to purge
    keyring.save()

    loaded = Keyring.load(path, PASSPHRASE, **FAST)
    assert [key.status for key in loaded.keys] == ["purged", "active"]
    assert loaded.readable_keys == [active]
    assert [key for key in loaded.keys if key.status == "retired"] == []
    document = json.loads(path.read_text())
    assert first.material not in path.read_text()
    assert document["generation"] == loaded.generation == 1


def test_readable_keys_never_include_retired_or_purged(path: Path) -> None:
    keyring = Keyring.empty(path)
    purged, retired, previous = (keyring.generate() for _ in range(3))
    active = keyring.generate()
    keyring.retire(purged.id)
    keyring.purge(purged.id)
    keyring.retire(retired.id)
    keyring.save()
    for view in (keyring, Keyring.load(path)):
        assert [key.id for key in view.readable_keys] == [active.id, previous.id]
        assert {key.status for key in view.keys} == {"active", "previous", "retired", "purged"}


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (
            _plain([{**_key_entry(status="purged")}], version=2, generation=1),
            "exactly the fields created_at, id, status",
        ),
        (
            _plain(
                [{"id": "k1", "created_at": "2026-11-25T10:00:00Z", "status": "purged"}],
                version=1,
            ),
            "exactly the fields created_at, id, secret, status",
        ),
        (_plain([_key_entry(status="purged")], version=1), "bad status 'purged'"),
        (
            _plain(
                [{"id": "k1", "created_at": "2026-11-25T10:00:00Z", "status": "retired"}],
                version=2,
                generation=1,
            ),
            "exactly the fields created_at, id, secret, status",
        ),
    ],
)
def test_malformed_purged_records(path: Path, document: dict[str, Any], message: str) -> None:
    _write(path, document)
    with pytest.raises(ChatsecError, match=message) as excinfo:
        Keyring.load(path)
    assert "key #1" in _error(excinfo, "ab" * 32)


# --- rotation and the rest --------------------------------------------------------------


def test_rotation_demotes_the_old_active_key(path: Path) -> None:
    keyring = Keyring.empty(path)
    old = keyring.generate()
    new = keyring.generate()
    assert keyring.active == new
    assert keyring.get(old.id).status == "previous"
    assert [key.id for key in keyring.readable_keys] == [new.id, old.id]


def test_generate_without_activating(path: Path) -> None:
    keyring = Keyring.empty(path)
    current = keyring.generate()
    staged = keyring.generate(activate=False)
    assert staged.status == "previous"
    assert keyring.active == current

    keyring.activate(staged.id)
    assert keyring.active.id == staged.id
    assert keyring.get(current.id).status == "previous"


def test_no_active_key(path: Path) -> None:
    keyring = Keyring.empty(path)
    with pytest.raises(ChatsecError) as excinfo:
        _ = keyring.active
    assert str(excinfo.value) == f"keyring {path} has no active key: chatsec keys generate"


def test_retire(path: Path) -> None:
    keyring = Keyring.empty(path)
    old = keyring.generate()
    new = keyring.generate()
    with pytest.raises(ChatsecError, match="is the active key"):
        keyring.retire(new.id)

    retired = keyring.retire(old.id)
    assert retired.status == "retired"
    assert keyring.readable_keys == [new]
    assert keyring.get(old.id) == retired  # still in the file, only no longer readable
    with pytest.raises(ChatsecError, match="is retired"):
        keyring.activate(old.id)

    keyring.save()
    assert Keyring.load(path).get(old.id).status == "retired"


def test_unknown_key(path: Path) -> None:
    keyring = Keyring.empty(path)
    with pytest.raises(ChatsecError, match="has no key 'nope'"):
        keyring.get("nope")
    for action in (keyring.retire, keyring.unretire, keyring.purge):
        with pytest.raises(ChatsecError, match="has no key"):
            action("nope")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "is not a chatsec keyring"),
        ('{"format": "other", "version": 1, "keys": []}', "is not a chatsec keyring"),
        ('{"format": "chatsec-keyring", "version": 3, "keys": []}', "unsupported version 3"),
        ('{"format": "chatsec-keyring", "version": true, "keys": []}', "unsupported version"),
        ('{"format": "chatsec-keyring", "keys": []}', "unsupported version None"),
        ('{"format": "chatsec-keyring", "version": 1}', 'exactly one of "keys" or "sealed"'),
        (
            '{"format": "chatsec-keyring", "version": 1, "keys": [], "sealed": {}}',
            'exactly one of "keys" or "sealed"',
        ),
        ('{"format": "chatsec-keyring", "version": 1, "keys": {}}', '"keys" must be a list'),
        ('{"format": "chatsec-keyring", "version": 2, "keys": []}', "has no generation"),
        (
            '{"format": "chatsec-keyring", "version": 1, "generation": 1, "keys": []}',
            'exactly one of "keys" or "sealed" \\(found generation, keys\\)',
        ),
        (
            '{"format": "chatsec-keyring", "version": 2, "generation": 1, "keys": [], "x": 1}',
            'exactly one of "keys" or "sealed" \\(found keys, x\\)',
        ),
    ],
)
def test_malformed_documents(path: Path, content: str, message: str) -> None:
    path.write_text(content)
    path.chmod(0o600)
    with pytest.raises(ChatsecError, match=message):
        Keyring.load(path)


def test_non_utf8_file(path: Path) -> None:
    path.write_bytes(b"\xff\xfe")
    path.chmod(0o600)
    with pytest.raises(ChatsecError, match="not UTF-8"):
        Keyring.load(path)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (_key_entry(id="has space"), "bad key id 'has space'"),
        (_key_entry(id=""), "bad key id ''"),
        (_key_entry(id="x" * 65), "bad key id"),
        (_key_entry(id="k1'; drop table"), "bad key id"),
        (_key_entry(status="current"), "bad status 'current'"),
        (_key_entry(created_at="yesterday"), "bad created_at"),
        (_key_entry(created_at="2026-11-25T10:00:00"), "bad created_at"),  # no zone
        (_key_entry(created_at="2026-11-25T10:00:00+01:00"), "bad created_at"),
        (_key_entry(secret="ab" * 16), "secret is 32 characters, expected 64"),
        (_key_entry(secret="zz" * 32), "secret is not hexadecimal"),
        ({"id": "k1"}, "expected an object with exactly the fields"),
        ({**_key_entry(), "extra": "x"}, "expected an object with exactly the fields"),
        ({**_key_entry(), "status": 1}, "must be a string"),
    ],
)
@pytest.mark.parametrize("version", [1, 2])
def test_malformed_keys(path: Path, entry: dict[str, Any], message: str, version: int) -> None:
    extra = {"generation": 1} if version == 2 else {}
    _write(path, _plain([entry], version=version, **extra))
    with pytest.raises(ChatsecError, match=message) as excinfo:
        Keyring.load(path)
    assert "key #1" in str(excinfo.value)
    assert "ab" * 16 not in str(excinfo.value)  # the secret is never echoed


def test_duplicate_ids_and_two_active_keys(path: Path) -> None:
    _write(path, _plain([_key_entry(), _key_entry(status="previous")]))
    with pytest.raises(ChatsecError, match="two keys with id"):
        Keyring.load(path)
    _write(path, _plain([_key_entry(), _key_entry(id="k2")]))
    with pytest.raises(ChatsecError, match="2 active keys"):
        Keyring.load(path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"kdf": "pbkdf2"}, "unsupported kdf"),
        ({"cipher": "AES-128-CBC"}, "unsupported cipher"),
        ({"n": 2**30}, "out of range"),
        ({"n": 1000}, "out of range"),
        ({"n": "32768"}, "must be an integer"),
        ({"r": 32, "n": 2**20}, "need too much memory"),
        ({"salt": "***"}, "not valid base64"),
        ({"nonce": "AAAA"}, "wrong length"),
    ],
)
def test_malformed_sealed_section(path: Path, change: dict[str, Any], message: str) -> None:
    Keyring.empty(path, PASSPHRASE, **FAST).save()
    document = json.loads(path.read_text())
    document["sealed"].update(change)
    _write(path, document)
    with pytest.raises(ChatsecError, match=message):
        Keyring.load(path, PASSPHRASE, **FAST)


def test_repr_hides_secret_and_passphrase(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE, **FAST)
    key = keyring.generate()
    for text in (repr(key), str(key), repr(keyring), repr(keyring.keys)):
        assert key.material not in text
        assert repr(key.secret) not in text
        assert PASSPHRASE not in text
    assert key.id in repr(key)
    assert repr(keyring) == f"Keyring({str(path)!r}, keys=1, sealed=True, generation=0)"


def test_resolve_keyring_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CHATSEC_KEYRING", raising=False)
    with pytest.raises(ChatsecError, match="--keyring PATH or set CHATSEC_KEYRING"):
        resolve_keyring_path(None)
    assert resolve_keyring_path("/x/keys.json") == Path("/x/keys.json")
    monkeypatch.setenv("CHATSEC_KEYRING", str(tmp_path / "env.json"))
    assert resolve_keyring_path(None) == tmp_path / "env.json"
    assert resolve_keyring_path("/x/keys.json") == Path("/x/keys.json")


def test_passphrase_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHATSEC_KEYRING_PASSPHRASE", raising=False)
    assert passphrase_from_env() is None
    monkeypatch.setenv("CHATSEC_KEYRING_PASSPHRASE", "")
    assert passphrase_from_env() is None
    monkeypatch.setenv("CHATSEC_KEYRING_PASSPHRASE", PASSPHRASE)
    assert passphrase_from_env() == PASSPHRASE


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_unwritable_directory_fails_cleanly(tmp_path: Path) -> None:
    directory = tmp_path / "ro"
    directory.mkdir()
    directory.chmod(0o500)
    try:
        with pytest.raises(ChatsecError, match="cannot write keyring"):
            Keyring.empty(directory / "keyring.json").save()
    finally:
        directory.chmod(0o700)


def test_missing_directory_fails_cleanly(tmp_path: Path) -> None:
    with pytest.raises(ChatsecError, match="cannot write keyring .*No such file or directory"):
        Keyring.empty(tmp_path / "missing" / "keyring.json").save()
