"""Operations that cannot lose data: concurrent runs lock, a rotation resumes exactly,
destructive rollbacks confirm, kills leave nothing behind (issue 10)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from chatsec.app import user_transaction
from chatsec.app.chat import post_message
from chatsec.cli.main import cli
from chatsec.db.connect import connect
from chatsec.db.lock import LOCK_CLASS, LOCK_OBJECT, database_lock
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Keyring
from chatsec.keys.manage import generate_key
from chatsec.keys.rotate import rotate
from chatsec.migrate import runner
from chatsec.ops.restore import restore
from chatsec.policy.compare import diff_live
from chatsec.policy.load import load_policies
from tests import operations_support as ops
from tests.conftest import ChatDB
from tests.encryption_support import Chat, decrypted_contents, insert_many, keys_env, make_chat

TRIALS = 20
MESSAGES = 30


@pytest.fixture()
def chat(deployed_db: ChatDB, tmp_path: Path) -> Iterator[Chat]:
    made = make_chat(deployed_db, tmp_path / "keyring.json")
    insert_many(made, MESSAGES)
    yield made
    made.engine.dispose()


@pytest.fixture(scope="module")
def pool() -> Iterator[ProcessPoolExecutor]:
    with ops.process_pool() as workers:
        yield workers


def _counts(db: ChatDB) -> dict[str | None, int]:
    with registry.acting_as(db.migrator, registry.ROTATOR) as conn:
        return registry.rows_per_key(conn)


def _registered(db: ChatDB) -> set[str]:
    with registry.acting_as(db.migrator, registry.OWNER) as conn:
        return set(registry.registered(conn))


def _rotation(db: ChatDB) -> registry.Rotation | None:
    with registry.acting_as(db.migrator, registry.OWNER) as conn:
        return registry.rotation(conn)


def _readable(chat: Chat, keyring: Keyring) -> list[str]:
    return decrypted_contents(chat.engine, chat.alice, keyring)


def _together(pool: ProcessPoolExecutor, fn: Callable[..., str], *args: str) -> list[str]:
    moment = time.time() + 0.3
    futures = [pool.submit(fn, moment, *args) for _ in range(2)]
    return [future.result(timeout=120) for future in futures]


def test_two_rotations_started_together_never_lose_a_key(
    chat: Chat, deployed_db: ChatDB, pool: ProcessPoolExecutor
) -> None:
    expected = sorted(_readable(chat, chat.keyring))
    assert len(expected) == MESSAGES
    path = str(chat.keyring.path)
    for trial in range(TRIALS):
        outcomes = _together(pool, ops.rotate_at, path, deployed_db.migrator.libpq)
        # The second waits for the first (no deadlock), then rotates again with its own key.
        assert all(o.startswith("ok ") for o in outcomes), (trial, outcomes)
        assert outcomes[0] != outcomes[1], (trial, outcomes)
        keyring = Keyring.load(chat.keyring.path)
        assert _registered(deployed_db) <= {key.id for key in keyring.keys}, trial
        assert _counts(deployed_db) == {keyring.active.id: MESSAGES}, trial
        assert keyring.active.id in {o.split()[1] for o in outcomes}
        assert sorted(_readable(chat, keyring)) == expected, trial
    assert len(Keyring.load(chat.keyring.path).keys) == 1 + 2 * TRIALS


def test_two_generates_started_together_never_lose_a_key(
    chat: Chat, deployed_db: ChatDB, pool: ProcessPoolExecutor
) -> None:
    path = str(chat.keyring.path)
    for trial in range(TRIALS):
        outcomes = _together(pool, ops.generate_at, path, deployed_db.migrator.libpq)
        assert all(o.startswith("ok ") for o in outcomes), (trial, outcomes)
        made = {o.split()[1] for o in outcomes}
        keyring = Keyring.load(chat.keyring.path)
        ids = {key.id for key in keyring.keys}
        assert len(made) == 2 and made <= ids, trial
        assert made <= _registered(deployed_db), trial
        assert keyring.active.id in made
        insert_many(chat, 1, keyring)  # the active key is accepted
    assert len(Keyring.load(chat.keyring.path).keys) == 1 + 2 * TRIALS


@pytest.mark.parametrize("phase", ["key-saved", "key-registered", "batch", "draining", "vacuuming"])
def test_a_rotation_killed_at_any_moment_is_finished_with_the_same_key(
    chat: Chat, deployed_db: ChatDB, phase: str
) -> None:
    expected = sorted(_readable(chat, chat.keyring))
    old = chat.keyring.active.id
    code = ops.run_killed(
        ops.rotate_killed_at, str(chat.keyring.path), deployed_db.migrator.libpq, phase
    )
    assert code == -9
    saved = Keyring.load(chat.keyring.path)
    new = saved.keys[-1].id
    assert new != old and len(saved.keys) == 2
    recorded = _rotation(deployed_db)
    if phase == "key-saved":
        # Saved, not registered: the keyring's active key is still the old one, so an
        # application that reloads it now keeps writing.
        assert saved.active.id == old and new not in _registered(deployed_db)
        assert recorded is None
        insert_many(chat, 1, saved)
        expected.append("bulk message 1")
    else:
        assert recorded is not None and recorded.key_id == new and not recorded.finished
        phase_in_db = {"key-registered": "rewriting", "batch": "rewriting"}.get(phase, phase)
        assert recorded.phase == phase_in_db
    if phase == "key-registered":
        # Registered, not yet active in the file: the application still writes the old key.
        assert saved.active.id == old and new in _registered(deployed_db)
    result = rotate(Keyring.load(chat.keyring.path), deployed_db.migrator)
    after = Keyring.load(chat.keyring.path)
    assert [key.id for key in after.keys] == [old, new]  # no other key was made
    assert after.active.id == new and result.key_id == new
    assert _counts(deployed_db) == {new: len(expected)}
    finished = _rotation(deployed_db)
    assert finished is not None and finished.finished and finished.key_id == new
    if phase == "vacuuming":
        assert result.rows == 0 and not result.generated
    assert sorted(_readable(chat, after)) == sorted(expected)
    # Only now, with that rotation finished, does the next run start another.
    assert rotate(after, deployed_db.migrator, vacuum=False).generated


def test_generate_is_refused_while_a_rotation_is_unfinished(
    chat: Chat, deployed_db: ChatDB
) -> None:
    code = ops.run_killed(
        ops.rotate_killed_at, str(chat.keyring.path), deployed_db.migrator.libpq, "draining"
    )
    assert code == -9
    result = CliRunner().invoke(
        cli, ["keys", "generate"], env=keys_env(deployed_db, chat.keyring.path)
    )
    assert result.exit_code == 2
    assert "is unfinished" in result.output and "phase draining" in result.output
    status = CliRunner().invoke(
        cli, ["keys", "status"], env=keys_env(deployed_db, chat.keyring.path)
    )
    assert "UNFINISHED, phase draining" in status.output


def test_generate_killed_before_activation_reuses_its_key(chat: Chat, deployed_db: ChatDB) -> None:
    old = chat.keyring.active.id
    for phase in ("key-saved", "key-registered"):
        code = ops.run_killed(
            ops.generate_killed_at, str(chat.keyring.path), deployed_db.migrator.libpq, phase
        )
        assert code == -9
        saved = Keyring.load(chat.keyring.path)
        assert saved.active.id == old, phase
        insert_many(chat, 1, saved)  # an application reloading now writes as before
    key = generate_key(Keyring.load(chat.keyring.path), deployed_db.migrator)
    after = Keyring.load(chat.keyring.path)
    assert [k.id for k in after.keys] == [old, key.id] and after.active.id == key.id
    assert key.id in _registered(deployed_db)
    insert_many(chat, 1, after)


def test_a_reloading_application_never_gets_an_unregistered_key(
    chat: Chat, deployed_db: ChatDB
) -> None:
    stop = threading.Event()
    errors: list[str] = []
    writes = 0

    def application() -> None:
        nonlocal writes
        while not stop.is_set():
            keyring = Keyring.load(chat.keyring.path)
            try:
                with user_transaction(chat.engine, chat.alice, keyring) as conn:
                    post_message(conn, chat.thread, "while keys change")
                writes += 1
            except sa.exc.DBAPIError as exc:
                errors.append(str(exc.orig).splitlines()[0])

    thread = threading.Thread(target=application)
    thread.start()
    try:
        for _ in range(8):
            generate_key(Keyring.load(chat.keyring.path), deployed_db.migrator)
    finally:
        stop.set()
        thread.join(30)
    assert writes > 0 and errors == []


def _tables(db: ChatDB) -> set[str]:
    with connect(db.admin) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'chat'"
        ).fetchall()
    return {str(r[0]) for r in rows}


def test_a_rollback_that_drops_data_refuses_without_yes(chat: Chat, deployed_db: ChatDB) -> None:
    env = {"CHATSEC_DATABASE_URL": deployed_db.migrator.libpq}
    head = runner.status(deployed_db.migrator).current
    refused = CliRunner().invoke(cli, ["rollback", "--to", "base"], env=env)
    assert refused.exit_code == 2, refused.output
    assert f"would drop table chat.messages: {MESSAGES} row(s)" in refused.output
    assert "would drop table chat.users: 2 row(s)" in refused.output
    # Empty tables and chatsec's bookkeeping hold nothing to lose.
    assert "chat.attachments" not in refused.output and "chat.deployment" not in refused.output
    assert "nothing changed: pass --yes" in refused.output
    assert runner.status(deployed_db.migrator).current == head
    assert _counts(deployed_db) == {chat.keyring.active.id: MESSAGES}
    with connect(deployed_db.admin) as conn:
        # Row-level security stayed forced: the count lifted it only inside its transaction.
        forced = conn.execute(
            "SELECT bool_and(relforcerowsecurity) FROM pg_catalog.pg_class "
            "WHERE relnamespace = 'chat'::regnamespace AND relkind = 'r'"
        ).fetchone()
    assert forced == (True,)
    done = CliRunner().invoke(cli, ["rollback", "--to", "base", "--yes"], env=env)
    assert done.exit_code == 0, done.output
    assert f"dropped table chat.messages: {MESSAGES} row(s)" in done.output
    assert _tables(deployed_db) == set()
    # Memberships are cluster-wide: the migrator keeps chat_key_rotator for other databases.
    with connect(deployed_db.migrator) as conn:
        member = conn.execute(
            "SELECT pg_catalog.pg_has_role(current_user, 'chat_key_rotator', 'MEMBER')"
        ).fetchone()
    assert member == (True,)


def test_a_rollback_that_drops_nothing_needs_no_yes(deployed_db: ChatDB) -> None:
    env = {"CHATSEC_DATABASE_URL": deployed_db.migrator.libpq}
    result = CliRunner().invoke(cli, ["rollback", "--to", "0007"], env=env)
    assert result.exit_code == 0, result.output
    assert "dropped" not in result.output.replace("rolled back", "")
    assert runner.status(deployed_db.migrator).current == ("0007",)


def test_a_rollback_never_leaves_ciphertext_where_plaintext_is_expected(
    chat: Chat, deployed_db: ChatDB
) -> None:
    env = {"CHATSEC_DATABASE_URL": deployed_db.migrator.libpq}
    head = runner.status(deployed_db.migrator).current
    bound = CliRunner().invoke(cli, ["rollback", "--to", "0002", "--yes"], env=env)
    assert bound.exit_code == 2 and "bound to their rows" in bound.output
    # Keys from before revision 0008 do not bind rows: then revision 0003 itself refuses.
    with connect(deployed_db.admin) as conn:
        conn.execute("UPDATE chat.encryption_keys SET binds_rows = false")
    refused = CliRunner().invoke(cli, ["rollback", "--to", "0002", "--yes"], env=env)
    assert refused.exit_code == 2
    assert f"{MESSAGES} message(s) are encrypted: below revision 0003" in refused.output
    assert runner.status(deployed_db.migrator).current == head
    assert _counts(deployed_db) == {chat.keyring.active.id: MESSAGES}


def test_deploys_started_together_serialize(empty_db: ChatDB, pool: ProcessPoolExecutor) -> None:
    outcomes = _together(pool, ops.deploy_at, empty_db.migrator.libpq)
    assert outcomes == ["ok", "ok"]
    state = runner.status(empty_db.migrator)
    assert state.up_to_date
    with connect(empty_db.migrator) as conn:
        assert diff_live(conn, load_policies()) == []


def test_a_held_lock_makes_the_next_command_wait_then_name_its_holder(
    deployed_db: ChatDB, tmp_path: Path
) -> None:
    env = keys_env(deployed_db, tmp_path / "keyring.json")
    with database_lock(deployed_db.migrator, "keys rotate"):
        started = time.monotonic()
        waited = CliRunner().invoke(cli, ["deploy", "--wait", "1"], env=env)
        assert time.monotonic() - started >= 1
        assert waited.exit_code == 2
        assert "deploy gave up after waiting 1 s: chatsec keys rotate (pid " in waited.output
        assert "role chatsec_migrator) holds chatsec's lock" in waited.output
        assert " since 20" in waited.output
        now = CliRunner().invoke(cli, ["keys", "generate", "--wait", "0"], env=env)
        assert now.exit_code == 2 and "keys generate gave up without waiting" in now.output
    assert not (tmp_path / "keyring.json").exists()
    assert CliRunner().invoke(cli, ["deploy", "--wait", "0"], env=env).exit_code == 0


def test_the_application_login_can_delay_operations_but_is_named(deployed_db: ChatDB) -> None:
    # Any login may take an advisory lock: the hostile application can hold chatsec's.
    with psycopg.connect(deployed_db.app.libpq, autocommit=True) as hostile:
        hostile.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_OBJECT))
        with pytest.raises(ChatsecError) as refused:
            runner.deploy(deployed_db.migrator, wait_s=0)
        assert "a session (pid " in str(refused.value)
        assert "role chatsec_app) holds chatsec's lock" in str(refused.value)
    runner.deploy(deployed_db.migrator, wait_s=0)


def test_the_keyring_lock_names_its_holder_and_is_released(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    holder = Keyring.empty(path)
    with holder.locked(command="keys rotate"):
        with pytest.raises(ChatsecError) as refused:
            generate_key(Keyring.empty(path), None, wait_s=0)
        message = str(refused.value)
        assert f"keys generate gave up without waiting on the lock of keyring {path}" in message
        assert "chatsec keys rotate (pid " in message
        assert not path.exists()
    generate_key(Keyring.empty(path), None, wait_s=0)
    assert len(Keyring.load(path).keys) == 1


def test_temporary_files_of_a_killed_save_are_removed_by_the_next_run(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    generate_key(Keyring.empty(path), None)
    leftover = tmp_path / ".keyring.json.0badc0de.tmp"
    leftover.write_bytes(path.read_bytes())  # what a save killed before its rename leaves
    unrelated = [tmp_path / ".keyring.json.notes.tmp", tmp_path / ".other.json.0badc0de.tmp"]
    for other in unrelated:
        other.write_text("not ours")
    generate_key(Keyring.load(path), None)
    assert not leftover.exists()
    assert all(other.exists() for other in unrelated)


def test_a_lost_keyring_is_not_replaced_by_accident(
    chat: Chat, deployed_db: ChatDB, tmp_path: Path
) -> None:
    lost = tmp_path / "lost.json"
    env = keys_env(deployed_db, lost)
    rotate_missing = CliRunner().invoke(cli, ["keys", "rotate"], env=env)
    assert rotate_missing.exit_code == 2
    assert "stay unreadable without it" in rotate_missing.output
    refused = CliRunner().invoke(cli, ["keys", "generate"], env=env)
    assert refused.exit_code == 2
    assert "has 1 registered key(s) and 30 encrypted message(s)" in refused.output
    assert not lost.exists() and _registered(deployed_db) == {chat.keyring.active.id}
    started = CliRunner().invoke(cli, ["keys", "generate", "--new-keyring"], env=env)
    assert started.exit_code == 0, started.output
    fresh = Keyring.load(lost)
    assert fresh.generation > chat.keyring.generation  # continues the registry's generations
    insert_many(chat, 1, fresh)
    # The old messages stay unreadable with the new keyring; only the new one shows.
    assert [text for text in _readable(chat, fresh) if text != "None"] == ["bulk message 1"]


def test_restore_holds_the_lock_of_its_target(empty_db: ChatDB, tmp_path: Path) -> None:
    dump = tmp_path / "chat.dump"
    dump.write_bytes(b"not even a dump")
    with database_lock(empty_db.migrator, "restore"), pytest.raises(ChatsecError) as refused:
        restore(
            dump,
            empty_db.migrator,
            empty_db.admin,
            empty_db.auditor,
            accept_unsigned=True,
            wait_s=0,
        )
    assert "restore gave up without waiting: chatsec restore (pid " in str(refused.value)
