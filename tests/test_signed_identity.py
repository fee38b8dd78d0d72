"""Signed identity (revision 0011): the application login, holding hostile SQL and a valid
token for one user, cannot act as anyone else.

The attacker is alice (a member of thread t); the victim is carol (alone in thread u).
Each attack runs on the app login in a transaction where alice's genuine token is set
first, then the forged identity; success would show carol's thread or let a row be
written in carol's name.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from chatsec.app import PoolSettings, create_app_engine, user_transaction
from chatsec.cli.main import cli
from chatsec.db.connect import connect
from chatsec.errors import ChatsecError
from chatsec.identity import IDENTITY_KEYRING_ENV, Signer, mint
from chatsec.identity.token import mac
from chatsec.keys.keyring import Keyring
from chatsec.migrate import runner
from tests.audit_support import result, run_audit
from tests.chat_fixtures import SeededChat
from tests.conftest import ChatDB, identity_token, register_identity, set_identity

Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture()
def app(shared_deployed_db: ChatDB) -> Iterator[Conn]:
    with connect(shared_deployed_db.app) as conn:
        yield conn
        conn.rollback()


def _identity(conn: Conn) -> object:
    row = conn.execute("SELECT chat.current_user_id()").fetchone()
    return row[0] if row else None


def _sees_carols_thread(conn: Conn, chat: SeededChat) -> int:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM chat.messages WHERE thread_id = %(u)s)"
        " + (SELECT count(*) FROM chat.threads WHERE id = %(u)s)"
        " + (SELECT count(*) FROM chat.thread_participants WHERE thread_id = %(u)s)"
        " + (SELECT count(*) FROM chat.users WHERE id = %(c)s)",
        {"u": chat.u, "c": chat.carol},
    ).fetchone()
    assert row is not None
    return int(str(row[0]))


def _session_key() -> Signer:
    return Signer.load()


def _forgeries(chat: SeededChat) -> dict[str, str]:
    """Every identity alice could try to set for carol without carol's token."""
    signer = _session_key()
    key = signer.keyring.active
    alices = signer.token(chat.alice)
    carols = signer.token(chat.carol)
    payload = carols.rsplit(".", 1)[0]
    stranger = Keyring.empty(Path("/nonexistent/never-saved.json"))
    other_key = stranger.generate()
    future = int((time.time() + 60) * 1000)
    return {
        # alice's genuine MAC on a token that names carol
        "carol's id under alice's MAC": alices.replace(str(chat.alice), str(chat.carol)),
        # a MAC off by one digit
        "tampered MAC": carols[:-1] + ("0" if carols[-1] != "0" else "1"),
        # a MAC computed with the right algorithm but a key the database does not know
        "key not registered": mint(other_key, chat.carol),
        # the right key id, a MAC from another key
        "registered key id, foreign MAC": f"{payload}.{mac(other_key.secret or b'', payload)}",
        # a made-up key id
        "unknown key id": carols.replace(f".{key.id}.", ".k00000000-deadbeef.", 1),
        # a genuine token for carol, expired a second ago
        "expired": mint(key, chat.carol, -1.0),
        # alice's token with its expiry pushed back (the MAC no longer matches)
        "alice's token re-dated": alices.replace(alices.split(".")[3], str(future), 1).replace(
            str(chat.alice), str(chat.carol)
        ),
        "a version the verifier does not know": "v2" + carols[2:],
        "a seventh field": carols + ".00",
        "garbage": "not a token at all",
        "dots only": ".....",
        "very long": "v1." + "a" * 10_000,
    }


def test_a_bare_app_user_id_gives_no_identity(app: Conn, chat: SeededChat) -> None:
    app.execute("SELECT set_config('app.user_id', %s, true)", (str(chat.carol),))
    assert _identity(app) is None
    assert _sees_carols_thread(app, chat) == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute(
            "INSERT INTO chat.threads (name, created_by) VALUES ('as carol', %s)", (chat.carol,)
        )


@pytest.mark.parametrize(
    "forgery",
    sorted(
        [
            "carol's id under alice's MAC",
            "tampered MAC",
            "key not registered",
            "registered key id, foreign MAC",
            "unknown key id",
            "expired",
            "alice's token re-dated",
            "a version the verifier does not know",
            "a seventh field",
            "garbage",
            "dots only",
            "very long",
        ]
    ),
)
def test_a_forged_token_gives_no_identity(app: Conn, chat: SeededChat, forgery: str) -> None:
    set_identity(app, chat.alice)
    assert _identity(app) == chat.alice  # the attacker's own, genuine identity
    app.execute("SELECT set_config('app.identity', %s, true)", (_forgeries(chat)[forgery],))
    assert _identity(app) is None
    assert _sees_carols_thread(app, chat) == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        app.execute(
            "INSERT INTO chat.threads (name, created_by) VALUES ('as carol', %s)", (chat.carol,)
        )


def test_a_genuine_token_works_until_it_expires(app: Conn, chat: SeededChat) -> None:
    key = _session_key().keyring.active
    token = mint(key, chat.carol, 0.4)
    app.execute("SELECT set_config('app.identity', %s, true)", (token,))
    assert _identity(app) == chat.carol
    assert _sees_carols_thread(app, chat) == 4
    time.sleep(0.5)
    # The same transaction, a later statement: expiry is per statement.
    assert _identity(app) is None
    assert _sees_carols_thread(app, chat) == 0


def test_a_token_from_an_earlier_transaction_on_the_pooled_connection_is_gone_or_expired(
    shared_deployed_db: ChatDB, chat: SeededChat
) -> None:
    short = Signer(_session_key().keyring, lifetime_s=0.3)
    engine = create_app_engine(
        shared_deployed_db.app.libpq, pool=PoolSettings(max_connections=1), identity=short
    )
    try:
        with user_transaction(engine, chat.carol) as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            # What hostile SQL in carol's own transaction could keep: her token.
            carols = conn.execute(sa.text("SELECT current_setting('app.identity')")).scalar_one()
            assert conn.execute(sa.text("SELECT chat.current_user_id()")).scalar_one() == chat.carol
        time.sleep(0.4)
        with user_transaction(engine, chat.alice) as conn:
            assert conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() == pid
            left = conn.execute(sa.text("SELECT current_setting('app.identity')")).scalar_one()
            assert left != carols  # transaction-local: carol's token did not stay behind
            conn.execute(sa.text("SELECT set_config('app.identity', :t, true)"), {"t": carols})
            assert conn.execute(sa.text("SELECT chat.current_user_id()")).scalar_one() is None
            seen = conn.execute(
                sa.text("SELECT count(*) FROM chat.messages WHERE thread_id = :u"), {"u": chat.u}
            ).scalar_one()
            assert seen == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize("login", ["app", "auditor"])
def test_the_identity_keys_are_unreadable_by_the_app_login_and_the_auditor(
    shared_deployed_db: ChatDB, login: str
) -> None:
    with connect(shared_deployed_db.url(login)) as conn:
        for query in (
            "SELECT secret FROM chat.identity_keys",
            "SELECT count(*) FROM chat.identity_keys",
            "SET ROLE chat_identity",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(query)


def test_only_chat_identity_and_the_migrator_can_read_the_keys(shared_deployed_db: ChatDB) -> None:
    with shared_deployed_db.sandbox.admin_connect(shared_deployed_db.name) as conn:
        readers = conn.execute(
            "SELECT rolname FROM pg_roles WHERE NOT rolsuper AND rolname !~ '^pg_' AND "
            "(has_table_privilege(oid, 'chat.identity_keys', 'SELECT') OR "
            " has_column_privilege(oid, 'chat.identity_keys', 'secret', 'SELECT'))"
        ).fetchall()
    # chat_identity, and the migrator that registers keys as it (it deploys the verifier too).
    assert sorted(r[0] for r in readers) == sorted(
        ["chat_identity", shared_deployed_db.migrator.user]
    )


def test_user_transaction_without_an_identity_keyring_is_refused(
    shared_deployed_db: ChatDB, chat: SeededChat, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(IDENTITY_KEYRING_ENV)
    engine = create_app_engine(shared_deployed_db.app.libpq)
    try:
        with (
            pytest.raises(ChatsecError, match="no identity keyring"),
            user_transaction(engine, chat.alice),
        ):
            pass
    finally:
        engine.dispose()


# --- keys identity: generate, rotate, retire, status ---------------------------------


def _keys(db: ChatDB, keyring: Path, *args: str) -> tuple[int, str]:
    env = {"CHATSEC_DATABASE_URL": db.migrator.libpq, IDENTITY_KEYRING_ENV: str(keyring)}
    out = CliRunner().invoke(cli, ["keys", "identity", *args], env=env)
    return out.exit_code, out.output


def _acts(db: ChatDB, keyring: Path, user: uuid.UUID) -> object:
    """Who a fresh token from `keyring` makes the app login (None: nobody)."""
    with connect(db.app) as conn:
        token = Signer(Keyring.load(keyring)).token(user)
        conn.execute("SELECT set_config('app.identity', %s, true)", (token,))
        return _identity(conn)


def _with_key(db: ChatDB, keyring: Path, key_id: str, user: uuid.UUID) -> object:
    key = Keyring.load(keyring).get(key_id)
    with connect(db.app) as conn:
        conn.execute("SELECT set_config('app.identity', %s, true)", (mint(key, user),))
        return _identity(conn)


def test_rotation_keeps_two_keys_valid_until_the_old_one_is_retired(
    deployed_db: ChatDB, tmp_path: Path
) -> None:
    keyring = tmp_path / "identity.json"
    user = uuid.uuid4()
    code, out = _keys(deployed_db, keyring, "generate")
    assert code == 0, out
    first = Keyring.load(keyring).active.id
    assert _acts(deployed_db, keyring, user) == user

    code, out = _keys(deployed_db, keyring, "rotate")
    assert code == 0, out
    second = Keyring.load(keyring).active.id
    assert second != first and f"{first} still verifies" in out
    assert _with_key(deployed_db, keyring, first, user) == user  # during the switch
    assert _with_key(deployed_db, keyring, second, user) == user

    code, out = _keys(deployed_db, keyring, "retire", second)
    assert code == 2 and "is the active key" in out
    assert len(out.strip().splitlines()) == 1

    code, out = _keys(deployed_db, keyring, "rotate")
    assert code == 0, out
    third = Keyring.load(keyring).active.id
    # The key two rotations back is retired; the one just replaced still verifies.
    statuses = {k.id: k.status for k in Keyring.load(keyring).keys}
    assert statuses == {first: "retired", second: "previous", third: "active"}
    assert _with_key(deployed_db, keyring, first, user) is None
    assert _with_key(deployed_db, keyring, second, user) == user

    code, out = _keys(deployed_db, keyring, "retire", second)
    assert code == 0, out
    assert _with_key(deployed_db, keyring, second, user) is None
    assert _acts(deployed_db, keyring, user) == user

    code, out = _keys(deployed_db, keyring, "status")
    assert code == 0, out
    for key_id, state in ((first, "retired"), (second, "retired"), (third, "verifies")):
        line = next(row for row in out.splitlines() if key_id in row)
        assert state in line


def test_a_key_registered_elsewhere_is_refused(deployed_db: ChatDB, tmp_path: Path) -> None:
    keyring = tmp_path / "identity.json"
    assert _keys(deployed_db, keyring, "generate")[0] == 0
    document = json.loads(keyring.read_text())
    key_id = document["keys"][0]["id"]
    document["keys"][0]["secret"] = "00" * 32  # same id, another secret
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(document))
    forged.chmod(0o600)
    code, out = _keys(deployed_db, forged, "generate")
    assert code == 2
    assert f"identity key id {key_id} is registered in the database with a different secret" in out


def test_identity_keys_need_revision_0011(empty_db: ChatDB, tmp_path: Path) -> None:
    runner.deploy(empty_db.migrator, "0010")
    code, out = _keys(empty_db, tmp_path / "identity.json", "generate")
    assert code == 2
    assert out.strip() == (
        f"chatsec: error: {empty_db.migrator.target} has no signed identity "
        "(chat.identity_keys, role chat_identity): deploy chatsec's migrations (revision 0011) "
        "first"
    )


def test_the_revision_moves_a_bare_identity_to_a_signed_one(empty_db: ChatDB) -> None:
    """At 0010 a bare app.user_id is an identity; after 0011 it is not, a token is."""
    user = uuid.uuid4()
    runner.deploy(empty_db.migrator, "0010")
    with connect(empty_db.app) as conn:
        conn.execute("SELECT set_config('app.user_id', %s, true)", (str(user),))
        assert _identity(conn) == user
    runner.deploy(empty_db.migrator)
    register_identity(empty_db.migrator)
    with connect(empty_db.app) as conn:
        conn.execute("SELECT set_config('app.user_id', %s, true)", (str(user),))
        assert _identity(conn) is None
        conn.execute("SELECT set_config('app.identity', %s, true)", (identity_token(user),))
        assert _identity(conn) == user


# --- the audit ------------------------------------------------------------------------


def test_the_audit_proves_signed_identity(deployed_db: ChatDB) -> None:
    report = run_audit(
        deployed_db, probe=True, check_ids=["probe-identity", "identity-key-readers"]
    )
    probe = result(report, "probe-identity")
    assert probe.status == "passed", probe.findings
    assert result(report, "identity-key-readers").status == "passed"


def test_the_audit_skips_what_it_cannot_sign(deployed_db: ChatDB) -> None:
    report = run_audit(deployed_db, probe=True, check_ids=["probe-identity"], identity_keyring=None)
    probe = result(report, "probe-identity")
    assert probe.status == "skipped"
    assert "need the identity keyring" in probe.skip_reason
    assert "a bare app.user_id, a made-up token" in probe.skip_reason


def test_the_audit_fails_a_bare_identity(empty_db: ChatDB) -> None:
    runner.deploy(empty_db.migrator, "0010")
    report = run_audit(empty_db, probe=True, check_ids=["probe-identity", "identity-key-readers"])
    probe = result(report, "probe-identity")
    assert probe.status == "failed"
    assert "the identity is a bare setting" in probe.findings[0].detail
    assert result(report, "identity-key-readers").status == "skipped"


def test_the_audit_fails_a_readable_identity_key(deployed_db: ChatDB) -> None:
    with deployed_db.sandbox.admin_connect(deployed_db.name) as conn:
        conn.execute("GRANT SELECT (secret) ON chat.identity_keys TO chat_auditor")
        conn.execute("GRANT chat_identity TO app_user")
        conn.commit()
    try:
        report = run_audit(deployed_db, check_ids=["identity-key-readers"])
        details = [f.detail for f in result(report, "identity-key-readers").findings]
        assert any(d.startswith("chat_auditor can read chat.identity_keys") for d in details)
        assert any(d.startswith("app_user is a member of chat_identity") for d in details)
    finally:
        with deployed_db.sandbox.admin_connect(deployed_db.name) as conn:
            conn.execute("REVOKE chat_identity FROM app_user")
            conn.commit()


def test_register_brings_the_keys_back_after_a_restore(deployed_db: ChatDB, tmp_path: Path) -> None:
    keyring = tmp_path / "identity.json"
    user = uuid.uuid4()
    assert _keys(deployed_db, keyring, "generate")[0] == 0
    # What a restored database looks like: backups hold no identity key.
    with deployed_db.sandbox.admin_connect(deployed_db.name) as conn:
        conn.execute("DELETE FROM chat.identity_keys")
    assert _acts(deployed_db, keyring, user) is None
    code, out = _keys(deployed_db, keyring, "register")
    assert code == 0 and f"registered {Keyring.load(keyring).active.id}" in out
    assert _acts(deployed_db, keyring, user) == user
    assert _keys(deployed_db, keyring, "register")[1].startswith("registered nothing new")
