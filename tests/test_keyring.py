"""The keyring file: round trips, sealing, file modes, rotation and malformed input."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from chatsec.errors import ChatsecError
from chatsec.keys import Keyring, passphrase_from_env, resolve_keyring_path

PASSPHRASE = "correct horse battery staple"


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


def _plain(keys: list[Any]) -> dict[str, Any]:
    return {"format": "chatsec-keyring", "version": 1, "keys": keys}


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "keyring.json"


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
    assert bytes.fromhex(second.material) == second.secret
    assert first.id != second.id
    document = json.loads(path.read_text())
    assert document["format"] == "chatsec-keyring"
    assert document["version"] == 1
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
    assert len(key.secret) == 32


def test_saved_file_is_private_and_no_temp_files_remain(path: Path) -> None:
    keyring = Keyring.empty(path)
    keyring.generate()
    keyring.save()
    keyring.save()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["keyring.json"]


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
        f"keyring {path} does not exist: chatsec keys generate --keyring {path}"
    )


def test_load_or_empty(path: Path) -> None:
    fresh = Keyring.load_or_empty(path, PASSPHRASE)
    assert fresh.sealed and fresh.keys == []
    key = fresh.generate()
    fresh.save()
    assert Keyring.load_or_empty(path, PASSPHRASE).active == key


def test_sealed_round_trip_keeps_sealing(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE)
    key = keyring.generate()
    keyring.save()

    loaded = Keyring.load(path, PASSPHRASE)
    assert loaded.sealed
    assert loaded.active == key
    loaded.generate()
    loaded.save()  # saved again with the passphrase it was loaded with

    document = json.loads(path.read_text())
    assert "keys" not in document
    sealed = document["sealed"]
    assert sealed["kdf"] == "scrypt"
    assert (sealed["n"], sealed["r"], sealed["p"]) == (2**15, 8, 1)
    assert sealed["cipher"] == "AES-256-GCM"
    assert len(Keyring.load(path, PASSPHRASE).keys) == 2


def test_seal_and_unseal_an_existing_keyring(path: Path) -> None:
    keyring = Keyring.empty(path)
    key = keyring.generate()
    keyring.save()
    plain = Keyring.load(path, PASSPHRASE)  # a passphrase does not seal a plain file
    assert not plain.sealed

    plain.seal(PASSPHRASE)
    plain.save()
    assert "sealed" in json.loads(path.read_text())
    resealed = Keyring.load(path, PASSPHRASE)
    resealed.unseal()
    resealed.save()
    assert Keyring.load(path).active == key


def test_sealed_file_does_not_contain_the_secret(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE)
    key = keyring.generate()
    keyring.save()
    raw = path.read_bytes()
    assert key.material.encode() not in raw
    assert key.material.upper().encode() not in raw
    assert key.secret not in raw
    assert PASSPHRASE.encode() not in raw


def test_wrong_passphrase_fails_cleanly(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE)
    keyring.generate()
    keyring.save()
    with pytest.raises(ChatsecError) as excinfo:
        Keyring.load(path, "not the passphrase")
    assert str(excinfo.value) == (
        f"cannot unseal keyring {path}: wrong passphrase or corrupted file"
    )


def test_tampered_ciphertext_fails_cleanly(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE)
    keyring.generate()
    keyring.save()
    document = json.loads(path.read_text())
    ciphertext = bytearray(base64.b64decode(document["sealed"]["ciphertext"]))
    ciphertext[0] ^= 1
    document["sealed"]["ciphertext"] = base64.b64encode(ciphertext).decode()
    _write(path, document)
    with pytest.raises(ChatsecError, match="wrong passphrase or corrupted file"):
        Keyring.load(path, PASSPHRASE)


def test_sealed_file_without_passphrase_names_the_variable(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE)
    keyring.save()
    with pytest.raises(ChatsecError, match="CHATSEC_KEYRING_PASSPHRASE"):
        Keyring.load(path)


def test_empty_passphrase_is_refused(path: Path) -> None:
    with pytest.raises(ChatsecError, match="must not be empty"):
        Keyring.empty(path, "")
    with pytest.raises(ChatsecError, match="must not be empty"):
        Keyring.empty(path).seal("")


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
    with pytest.raises(ChatsecError, match="has no key"):
        keyring.retire("nope")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "is not a chatsec keyring"),
        ('{"format": "other", "version": 1, "keys": []}', "is not a chatsec keyring"),
        ('{"format": "chatsec-keyring", "version": 2, "keys": []}', "unsupported version 2"),
        ('{"format": "chatsec-keyring", "version": true, "keys": []}', "unsupported version"),
        ('{"format": "chatsec-keyring", "keys": []}', "unsupported version None"),
        ('{"format": "chatsec-keyring", "version": 1}', 'exactly one of "keys" or "sealed"'),
        (
            '{"format": "chatsec-keyring", "version": 1, "keys": [], "sealed": {}}',
            'exactly one of "keys" or "sealed"',
        ),
        ('{"format": "chatsec-keyring", "version": 1, "keys": {}}', '"keys" must be a list'),
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
def test_malformed_keys(path: Path, entry: dict[str, Any], message: str) -> None:
    _write(path, _plain([entry]))
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
        ({"salt": "***"}, "not valid base64"),
        ({"nonce": "AAAA"}, "wrong length"),
    ],
)
def test_malformed_sealed_section(path: Path, change: dict[str, Any], message: str) -> None:
    Keyring.empty(path, PASSPHRASE).save()
    document = json.loads(path.read_text())
    document["sealed"].update(change)
    _write(path, document)
    with pytest.raises(ChatsecError, match=message):
        Keyring.load(path, PASSPHRASE)


def test_repr_hides_secret_and_passphrase(path: Path) -> None:
    keyring = Keyring.empty(path, PASSPHRASE)
    key = keyring.generate()
    for text in (repr(key), str(key), repr(keyring), repr(keyring.keys)):
        assert key.material not in text
        assert repr(key.secret) not in text
        assert PASSPHRASE not in text
    assert key.id in repr(key)


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
