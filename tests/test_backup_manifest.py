"""Backups that cannot be fooled or leave secrets behind: signed manifests, tools tied to chatsec."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from chatsec import __version__
from chatsec.cli.main import cli
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Key, Keyring
from chatsec.keys.manage import generate_key
from chatsec.migrate import runner
from chatsec.ops.backup import NOT_BACKED_UP, backup
from chatsec.ops.dumpscan import script_lines, verify_dump
from chatsec.ops.restore import restore
from chatsec.sandbox import Sandbox
from chatsec.sandbox.binaries import run_tool, start_tool, stop_tool
from tests.conftest import ChatDB
from tests.encryption_support import Chat, make_chat, post_all

KNOWN = [f"manifest test message {i}" for i in range(4)]
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture()
def chat(deployed_db: ChatDB, tmp_path: Path) -> Chat:
    return post_all(make_chat(deployed_db, tmp_path / "keyring.json"), KNOWN)


@pytest.fixture()
def dump(deployed_db: ChatDB, chat: Chat, tmp_path: Path) -> Path:
    """A backup of the chat, with its manifest beside it, in a directory of its own."""
    out = _backups(tmp_path) / "chat.dump"
    backup(deployed_db.admin, out, chat.keyring)
    return out


@pytest.fixture()
def second_empty_db(sandbox: Sandbox) -> Iterator[ChatDB]:
    db = ChatDB(f"t_{secrets.token_hex(5)}", sandbox)
    sandbox.create_database(db.name)
    yield db
    sandbox.drop_database(db.name)


def _backups(tmp_path: Path) -> Path:
    """A directory for backups only (the keyring's directory holds its lock file too)."""
    directory = tmp_path / "backups"
    directory.mkdir(exist_ok=True)
    return directory


def _manifest_file(dump: Path) -> Path:
    return dump.with_name(dump.name + ".manifest.json")


def _manifest(dump: Path) -> dict[str, Any]:
    document = json.loads(_manifest_file(dump).read_text())
    assert isinstance(document, dict)
    return document


def _expected_mac(document: dict[str, Any], key: Key) -> str:
    """The manifest's MAC computed as docs/operations.md specifies, independently of chatsec."""
    assert key.secret is not None
    derived = HKDF(
        algorithm=SHA256(),
        length=32,
        salt=b"chatsec backup manifest",
        info=b"chatsec backup manifest v1: HMAC-SHA256 key for keyring key " + key.id.encode(),
    ).derive(key.secret)
    body = {name: value for name, value in document.items() if name != "hmac_sha256"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hmac.new(derived, canonical.encode(), hashlib.sha256).hexdigest()


def _write_manifest(dump: Path, document: dict[str, Any], sign_with: Key | None = None) -> None:
    if sign_with is not None:
        document = {**document, "hmac_sha256": _expected_mac(document, sign_with)}
    _manifest_file(dump).write_text(json.dumps(document))


def _is_empty(db: ChatDB) -> bool:
    """Nothing of a chat restored: pg_restore creates schema chat first."""
    with psycopg.connect(db.admin.libpq) as conn:
        row = conn.execute("SELECT pg_catalog.to_regnamespace('chat') IS NULL").fetchone()
    return row is not None and row[0] is True


def _restore(dump: Path, db: ChatDB, keyring: Keyring | None, **kwargs: Any) -> Any:
    return restore(dump, db.migrator, db.admin, db.auditor, db.app, keyring, **kwargs)


def _restore_cli(dump: Path, db: ChatDB, keyring: Keyring, *extra: str) -> Any:
    return CliRunner().invoke(
        cli,
        ["restore", str(dump), "--database-url", db.migrator.libpq, "--admin-url",
         db.admin.libpq, "--audit-url", db.auditor.libpq, "--app-url", db.app.libpq,
         "--keyring", str(keyring.path), *extra],
        env={"CHATSEC_KEYRING": None, "CHATSEC_KEYRING_PASSPHRASE": None},
    )  # fmt: skip


# -- the manifest -------------------------------------------------------------------------


def test_backup_writes_a_signed_manifest_of_what_it_dumped(
    deployed_db: ChatDB, chat: Chat, dump: Path, tmp_path: Path
) -> None:
    document = _manifest(dump)
    key = chat.keyring.active
    assert _manifest_file(dump).stat().st_mode & 0o777 == 0o600
    data = dump.read_bytes()
    assert document["format"] == "chatsec-backup-manifest" and document["version"] == 1
    assert document["dump_sha256"] == hashlib.sha256(data).hexdigest()
    assert document["dump_size"] == len(data)
    assert document["revision"] == list(runner.status(deployed_db.admin).current)
    assert document["key_id"] == key.id and document["chatsec_version"] == __version__
    taken = datetime.fromisoformat(document["created_at"])
    assert abs(datetime.now(UTC) - taken) < timedelta(minutes=5)
    counts = document["row_counts"]
    assert counts["chat.messages"] == len(KNOWN) and counts["chat.users"] == 2
    assert counts["chat.threads"] == 1 and counts["chat.thread_participants"] == 2
    with psycopg.connect(deployed_db.admin.libpq) as conn:
        tables = conn.execute(
            "SELECT 'chat.' || relname FROM pg_catalog.pg_class WHERE relkind IN ('r', 'p') "
            "AND relnamespace = 'chat'::regnamespace"
        ).fetchall()
    # Every chat table but the identity keys, which no backup holds (docs/identity.md).
    assert sorted(counts) == sorted(str(t[0]) for t in tables if t[0] not in NOT_BACKED_UP)
    assert NOT_BACKED_UP == ("chat.identity_keys",)
    assert document["hmac_sha256"] == _expected_mac(document, key)
    # Nothing else is left in the directory: no partial dump, no temporary manifest.
    assert sorted(p.name for p in dump.parent.iterdir()) == ["chat.dump", "chat.dump.manifest.json"]
    with pytest.raises(ChatsecError, match="already exists"):
        backup(deployed_db.admin, dump, chat.keyring)
    dump.rename(dump.with_name("moved.dump"))  # a manifest alone also blocks the name
    with pytest.raises(ChatsecError, match=r"chat\.dump\.manifest\.json already exists"):
        backup(deployed_db.admin, dump, chat.keyring)


def test_a_same_length_tamper_of_the_dump_is_not_loaded(
    deployed_db: ChatDB, chat: Chat, dump: Path, empty_db: ChatDB
) -> None:
    # A rotation since the backup: the manifest still verifies under its key, found by id,
    # so what refuses the dump below is its digest.
    signed_with = chat.keyring.active.id
    generate_key(chat.keyring, deployed_db.migrator)
    assert chat.keyring.active.id != signed_with
    original = dump.read_bytes()
    grant = b"GRANT SELECT ON TABLE chat."
    assert grant in original
    tampered = original.replace(grant, b"GRANT DELETE ON TABLE chat.", 1)
    assert len(tampered) == len(original) and tampered != original
    dump.write_bytes(tampered)
    # The scan alone cannot see it: the GRANT is no plaintext and no key.
    assert verify_dump(dump, chat.keyring).problems == []
    refused = r"does not match its manifest: SHA-256 .*changed"
    with pytest.raises(ChatsecError, match=refused):
        _restore(dump, empty_db, chat.keyring)
    assert _is_empty(empty_db)
    with pytest.raises(ChatsecError, match=refused):  # the flag never accepts a proven change
        _restore(dump, empty_db, chat.keyring, accept_unsigned=True)
    result = _restore_cli(dump, empty_db, chat.keyring)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "is not restored: the dump does not match its manifest" in lines[0]
    dump.write_bytes(original + b"\0")
    with pytest.raises(ChatsecError, match=rf"{len(original) + 1} bytes, the manifest records"):
        _restore(dump, empty_db, chat.keyring)
    assert _is_empty(empty_db)


def _changed(name: str, value: object) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        document[name] = value

    return change


def _removed(name: str) -> Callable[[dict[str, Any]], None]:
    def change(document: dict[str, Any]) -> None:
        del document[name]

    return change


def _more_messages(document: dict[str, Any]) -> None:
    document["row_counts"]["chat.messages"] += 1


def test_a_tampered_manifest_is_refused_before_loading(
    chat: Chat, dump: Path, empty_db: ChatDB
) -> None:
    original = _manifest(dump)
    other = chat.keyring.generate(activate=False)  # in memory only: a second key to name
    bad_mac = "does not verify: its HMAC-SHA256 is not the one key"
    cases: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
        "created_at": (_changed("created_at", "2020-01-01T00:00:00Z"), bad_mac),
        "chatsec_version": (_changed("chatsec_version", "9.9.9"), bad_mac),
        "dump_sha256": (_changed("dump_sha256", hashlib.sha256(b"x").hexdigest()), bad_mac),
        "dump_size": (_changed("dump_size", original["dump_size"] + 1), bad_mac),
        "revision": (_changed("revision", ["0001"]), bad_mac),
        "row_counts": (_more_messages, bad_mac),
        "key_id": (_changed("key_id", other.id), bad_mac),
        "hmac_sha256": (_changed("hmac_sha256", "0" * 64), bad_mac),
        "extra field": (_changed("comment", "hi"), "unexpected field(s) comment"),
        "missing field": (_removed("row_counts"), "missing field(s) row_counts"),
        "format": (_changed("format", "something-else"), "is not a chatsec backup manifest"),
        "version": (_changed("version", 2), "unsupported version 2"),
        "type": (_changed("dump_size", str(original["dump_size"])), "dump_size must be"),
    }
    for case, (change, expected) in cases.items():
        document = json.loads(json.dumps(original))
        change(document)
        _write_manifest(dump, document)
        with pytest.raises(ChatsecError, match="is not restored: ") as refused:
            _restore(dump, empty_db, chat.keyring)
        assert expected in str(refused.value), (case, str(refused.value))
        assert "--accept-unsigned restores it unverified" in str(refused.value), case
    _manifest_file(dump).write_text("{not json")
    result = _restore_cli(dump, empty_db, chat.keyring)
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and "is not JSON" in lines[0], result.output
    assert _is_empty(empty_db)


def test_a_manifest_signed_with_another_keyring_is_refused(
    chat: Chat, dump: Path, empty_db: ChatDB, tmp_path: Path
) -> None:
    document = _manifest(dump)
    key = chat.keyring.active
    # An attacker's keyring with a key of the same id: a well-formed, wrongly keyed manifest.
    forged = Key(key.id, key.created_at, "active", os.urandom(32))
    _write_manifest(dump, document, sign_with=forged)
    with pytest.raises(ChatsecError, match=f"does not verify: .* key {key.id}"):
        _restore(dump, empty_db, chat.keyring)
    # Signed under the attacker's own key id: the keyring does not have it.
    stranger = Keyring.empty(tmp_path / "stranger.keyring")
    theirs = stranger.generate()
    _write_manifest(dump, {**document, "key_id": theirs.id}, sign_with=theirs)
    with pytest.raises(ChatsecError, match=f"key {theirs.id}, which keyring .* does not have"):
        _restore(dump, empty_db, chat.keyring)
    # The right key, purged since: nothing can verify it any more.
    _write_manifest(dump, document, sign_with=key)
    purged = Keyring(tmp_path / "purged.keyring", [Key(key.id, key.created_at, "purged", None)])
    with pytest.raises(ChatsecError, match=f"key {key.id}, which the keyring has purged"):
        _restore(dump, empty_db, purged)
    with pytest.raises(ChatsecError, match="cannot be verified without the keyring"):
        _restore(dump, empty_db, None)
    assert _is_empty(empty_db)


def test_a_missing_manifest_is_refused_and_accepted_only_loudly(
    chat: Chat, dump: Path, empty_db: ChatDB
) -> None:
    _manifest_file(dump).unlink()
    with pytest.raises(ChatsecError, match=r"no manifest .*chat\.dump\.manifest\.json beside"):
        _restore(dump, empty_db, chat.keyring)
    assert _is_empty(empty_db)
    result = _restore_cli(dump, empty_db, chat.keyring, "--accept-unsigned")
    assert result.exit_code == 0, result.output
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and warnings[0].startswith("chatsec: warning: restoring ")
    assert "WITHOUT a verified manifest (no manifest" in warnings[0]
    assert "manifest: NOT verified, accepted with --accept-unsigned: no manifest" in result.stdout
    assert "compared with the manifest: NOT" in result.stdout
    assert not _is_empty(empty_db)


def test_restored_rows_are_compared_with_the_manifest(
    chat: Chat, dump: Path, empty_db: ChatDB, second_empty_db: ChatDB
) -> None:
    report = _restore(dump, empty_db, chat.keyring)
    assert report.manifest is not None and report.manifest.row_counts["chat.messages"] == 4
    assert report.manifest_mismatches == [] and report.unverified is None and report.ok
    signed_with = report.manifest.key_id
    # An authentic manifest that the dump does not live up to (rows lost on the way).
    document = _manifest(dump)
    document["row_counts"]["chat.messages"] = 5
    document["row_counts"]["chat.gone"] = 1
    _write_manifest(dump, document, sign_with=chat.keyring.get(signed_with))
    result = _restore_cli(dump, second_empty_db, chat.keyring)
    assert result.exit_code == 1, result.output  # the mismatch is the only failure:
    assert f"manifest: verified (HMAC-SHA256 under key {signed_with}," in result.stdout
    assert " 0 failed," in result.stdout and "decryption: 4 of 4 message(s)" in result.stdout
    assert (
        "compared with the manifest: MISMATCH: chat.gone: missing after the restore (1 row(s) "
        "in the manifest); chat.messages: 4 row(s) restored, 5 in the manifest"
    ) in result.stdout


# -- tools that die with chatsec ----------------------------------------------------------

_PROBE = (
    "import ctypes, os, sys; sig = ctypes.c_int(-1); "
    "ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0); "  # PR_GET_PDEATHSIG
    "print(sig.value, os.getpgid(0) == os.getpid(), sys.stdin.read() == '')"
)


def test_client_tools_get_a_death_signal_and_a_process_group(dump: Path) -> None:
    ran = run_tool([sys.executable, "-c", _PROBE])
    assert ran.stdout.split() == [str(int(signal.SIGTERM)), "True", "True"], ran.stderr
    started = start_tool(
        [sys.executable, "-c", _PROBE], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert started.communicate()[0].split() == [str(int(signal.SIGTERM)).encode(), b"True", b"True"]
    # The scan's pg_restore: its own group, and stopped when the reader stops early.
    lines = script_lines(dump)
    next(lines)
    (child,) = _children(os.getpid(), "pg_restore")
    assert os.getpgid(child) == child
    lines.close()
    assert not _alive(child)


def test_stop_tool_reaches_the_whole_group() -> None:
    proc = start_tool(
        ["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdout is not None
    grandchild = int(proc.stdout.readline())
    stop_tool(proc)
    proc.stdout.close()
    _wait_for(lambda: not _alive(grandchild), 5, "the tool's own child to be stopped too")


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name, or None when there is no such pid."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return text.rsplit(")", 1)[1].split()


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")  # a zombie has ended


def _children(parent: int, name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        fields = _stat(int(entry.name))
        if comm == name and fields is not None and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def _processes_naming(fragment: str) -> list[int]:
    """Live processes whose command line holds `fragment`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if fragment in cmdline and _alive(int(entry.name)):
            found.append(int(entry.name))
    return found


def _wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass
class BlockedBackup:
    """`chatsec backup` running as its own process, its pg_dump waiting on a lock."""

    chatsec: subprocess.Popen[str]
    pg_dump: int
    partial_prefix: str


def _pg_dump_sessions(db: ChatDB, waiting_on_a_lock: bool = False) -> int:
    with psycopg.connect(db.admin.libpq, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_catalog.pg_stat_activity WHERE datname = %s "
            "AND application_name = 'pg_dump' AND (NOT %s OR wait_event_type = 'Lock')",
            (db.name, waiting_on_a_lock),
        ).fetchone()
    return int(row[0]) if row else 0


@contextmanager
def _blocked_backup(db: ChatDB, chat: Chat, out: Path) -> Iterator[BlockedBackup]:
    """Start `python -m chatsec backup` while a table is locked, so pg_dump is mid-dump."""
    holder = psycopg.connect(db.admin.libpq, autocommit=True)
    holder.execute("CREATE TABLE public.slowdown (id int)")
    holder.execute("BEGIN")
    holder.execute("LOCK TABLE public.slowdown IN ACCESS EXCLUSIVE MODE")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHATSEC_", "PG"))}
    env["PYTHONPATH"] = str(SRC)
    chatsec = subprocess.Popen(
        [sys.executable, "-m", "chatsec", "backup", "-o", str(out), "--database-url",
         db.admin.libpq, "--keyring", str(chat.keyring.path)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    pg_dump = -1
    try:
        _wait_for(lambda: len(_children(chatsec.pid, "pg_dump")) == 1, 30, "pg_dump to start")
        (pg_dump,) = _children(chatsec.pid, "pg_dump")
        _wait_for(
            lambda: _pg_dump_sessions(db, waiting_on_a_lock=True) == 1,
            10,
            "pg_dump to wait for the lock",
        )
        yield BlockedBackup(chatsec, pg_dump, f".{out.name}.partial-")
    finally:
        if chatsec.poll() is None:
            chatsec.kill()
        chatsec.wait()
        if pg_dump > 0 and _alive(pg_dump):
            os.kill(pg_dump, signal.SIGKILL)  # an orphan the behaviour under test failed to stop
        holder.execute("ROLLBACK")
        holder.execute("DROP TABLE public.slowdown")
        holder.close()


def test_a_killed_backup_leaves_no_pg_dump_and_the_next_removes_its_partial(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path
) -> None:
    out = _backups(tmp_path) / "chat.dump"
    with _blocked_backup(deployed_db, chat, out) as running:
        running.chatsec.kill()  # SIGKILL: chatsec gets no chance to clean up
        running.chatsec.wait()
        _wait_for(lambda: not _alive(running.pg_dump), 5, "pg_dump to end with chatsec")
        assert _processes_naming(running.partial_prefix) == []
        _wait_for(lambda: not _pg_dump_sessions(deployed_db), 5, "pg_dump's session to end")
        (partial,) = [p for p in out.parent.iterdir() if p.name.startswith(running.partial_prefix)]
        assert partial.stat().st_mode & 0o777 == 0o600
    notes: list[str] = []
    result = backup(deployed_db.admin, out, chat.keyring, notify=notes.append)
    assert result.removed_partials == [partial] and not partial.exists()
    assert notes == [f"removed {partial}, left by an interrupted backup of chat.dump"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["chat.dump", "chat.dump.manifest.json"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_an_interrupted_backup_stops_pg_dump_and_cleans_up(
    deployed_db: ChatDB, chat: Chat, tmp_path: Path, signum: signal.Signals
) -> None:
    out = _backups(tmp_path) / "chat.dump"
    with _blocked_backup(deployed_db, chat, out) as running:
        running.chatsec.send_signal(signum)
        _, stderr = running.chatsec.communicate(timeout=20)
        assert running.chatsec.returncode == 2, stderr
        cause = "SIGTERM" if signum == signal.SIGTERM else "interrupt"
        assert stderr.strip().splitlines() == [f"chatsec: error: backup stopped ({cause})"]
        assert not _alive(running.pg_dump)
        assert list(out.parent.iterdir()) == []  # no partial, no dump, no manifest
