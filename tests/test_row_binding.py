"""Ciphertext that only its own row can open, and keys that go only where they are needed.

The paste attack: someone who can read ciphertext (a dump, a replica, the DBA) and holds
any chat account copies a message's armor from a thread they are not in into their own
thread, and lets the application decrypt it for them. Revision 0008 binds every
ciphertext to its message and thread and stops passing ready ciphertext through.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa

from chatsec.app import user_transaction
from chatsec.app.chat import create_thread, post_message, register_user
from chatsec.db.connect import connect
from chatsec.keys import registry
from chatsec.keys.keyring import Keyring
from chatsec.keys.manage import generate_key
from chatsec.keys.rotate import rotate
from chatsec.queries import message_history
from tests.conftest import ChatDB
from tests.encryption_support import Chat, copy_ciphertext_behind_the_trigger, make_chat

FRAME_PREFIX = "\x01chatsec/2 "


@pytest.fixture()
def chat(deployed_db: ChatDB, tmp_path: Path) -> Iterator[Chat]:
    made = make_chat(deployed_db, tmp_path / "keyring.json")
    yield made
    made.engine.dispose()


def _private_thread(chat: Chat, text: str) -> tuple[uuid.UUID, uuid.UUID, uuid.UUID]:
    """carol's thread, which alice is not in, with one message: (carol, thread, message)."""
    carol = uuid.uuid4()
    with user_transaction(chat.engine, carol, chat.keyring) as conn:
        register_user(conn, carol, f"carol-{carol.hex[:8]}@example.com", f"carol_{carol.hex[:8]}")
        thread = create_thread(conn, "carol's")
        message = post_message(conn, thread, text)
    return carol, thread, message


def _stolen_armor(db: ChatDB, message: uuid.UUID) -> str:
    """The ciphertext as a dump, a replica or the DBA sees it."""
    with connect(db.admin) as conn:
        row = conn.execute("SELECT content FROM chat.messages WHERE id = %s", (message,)).fetchone()
    assert row is not None
    return str(row[0])


def _read_as(chat: Chat, user: uuid.UUID, message: uuid.UUID) -> str | None:
    with user_transaction(chat.engine, user, chat.keyring) as conn:
        value = conn.execute(
            sa.text("SELECT content FROM chat.messages_decrypted WHERE id = :id"), {"id": message}
        ).scalar_one()
    return None if value is None else str(value)


def _raw_plaintext(db: ChatDB, chat: Chat, message: uuid.UUID) -> str:
    """What the ciphertext holds, opened with pgcrypto directly (frame included)."""
    key = chat.keyring.active
    with connect(db.admin) as conn:
        row = conn.execute(
            "SELECT extensions.pgp_sym_decrypt(extensions.dearmor(content), %s) "
            "FROM chat.messages WHERE id = %s",
            (key.material, message),
        ).fetchone()
    assert row is not None
    return str(row[0])


def test_every_ciphertext_is_framed_with_its_message_and_thread(
    deployed_db: ChatDB, chat: Chat
) -> None:
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        message = post_message(conn, chat.thread, "bound")
    assert _raw_plaintext(deployed_db, chat, message) == (
        f"{FRAME_PREFIX}{message} {chat.thread}\x01bound"
    )
    assert _read_as(chat, chat.bob, message) == "bound"


@pytest.mark.parametrize("how", ["insert", "update", "upsert"])
def test_pasting_another_rows_ciphertext_shows_only_the_armor(
    deployed_db: ChatDB, chat: Chat, how: str
) -> None:
    _, _, secret = _private_thread(chat, "carol's private plans")
    armor = _stolen_armor(deployed_db, secret)
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        if how == "insert":
            pasted = post_message(conn, chat.thread, armor)
        elif how == "update":
            pasted = post_message(conn, chat.thread, "harmless")
            conn.execute(
                sa.text("UPDATE chat.messages SET content = :c WHERE id = :id"),
                {"c": armor, "id": pasted},
            )
        else:
            pasted = uuid.uuid4()
            upsert = sa.text(
                "INSERT INTO chat.messages (id, thread_id, user_id, content) "
                "VALUES (:id, :t, chat.current_user_id(), :c) "
                "ON CONFLICT (id) DO UPDATE SET content = EXCLUDED.content"
            )
            conn.execute(upsert, {"id": pasted, "t": chat.thread, "c": "harmless"})
            conn.execute(upsert, {"id": pasted, "t": chat.thread, "c": armor})
    # alice and every member of her thread see the armor text they pasted, never carol's words.
    for reader in (chat.alice, chat.bob):
        shown = _read_as(chat, reader, pasted)
        assert shown == armor and "carol's private plans" not in (shown or "")
    with user_transaction(chat.engine, chat.bob, chat.keyring) as conn:
        page = message_history(conn, chat.thread)
    assert all("carol's private plans" not in (m.content or "") for m in page)


def test_a_ciphertext_written_into_another_row_behind_the_triggers_back_is_refused(
    deployed_db: ChatDB, chat: Chat
) -> None:
    _, _, secret = _private_thread(chat, "carol's diary")
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        target = post_message(conn, chat.thread, "to be overwritten")
    copy_ciphertext_behind_the_trigger(deployed_db, secret, target)
    warnings: list[str] = []
    with user_transaction(chat.engine, chat.bob, chat.keyring) as conn:
        raw = conn.connection.driver_connection
        assert isinstance(raw, psycopg.Connection)
        raw.add_notice_handler(lambda d: warnings.append(d.message_primary or ""))
        page = {m.id: m.content for m in message_history(conn, chat.thread)}
    assert target in page and page[target] is None
    assert warnings == [
        f"chatsec: message {target} is not shown: its ciphertext belongs to another message"
    ]


def _unbound_row(db: ChatDB, chat: Chat, text: str) -> uuid.UUID:
    """A row as revision 0007 wrote it: the text encrypted without a frame."""
    key = chat.keyring.active
    message = uuid.uuid4()
    with connect(db.admin) as conn:
        conn.execute("SET session_replication_role = replica")
        conn.execute(
            "INSERT INTO chat.messages (id, thread_id, user_id, content, key_id) VALUES "
            "(%s, %s, %s, extensions.armor(extensions.pgp_sym_encrypt(%s, %s, "
            "'cipher-algo=aes256, s2k-mode=1'), ARRAY['Chatsec-Key'], ARRAY[%s]), %s)",
            (message, chat.thread, chat.alice, text, key.material, key.id, key.id),
        )
        conn.commit()
    return message


def _set_binds_rows(db: ChatDB, key_id: str, binds: bool) -> None:
    with connect(db.admin) as conn:
        conn.execute(
            "UPDATE chat.encryption_keys SET binds_rows = %s WHERE id = %s", (binds, key_id)
        )
        conn.commit()


def test_unbound_rows_open_only_under_keys_from_before_binding(
    deployed_db: ChatDB, chat: Chat
) -> None:
    legacy = _unbound_row(deployed_db, chat, "written by 0007")
    # A key made after revision 0008 never wrote an unbound row: refuse one.
    assert _read_as(chat, chat.bob, legacy) is None
    # A key registered before 0008 (the revision sets binds_rows false) still reads them.
    _set_binds_rows(deployed_db, chat.keyring.active.id, False)
    assert _read_as(chat, chat.bob, legacy) == "written by 0007"


def test_rotation_binds_the_old_rows_and_drains_the_old_key(
    deployed_db: ChatDB, chat: Chat
) -> None:
    legacy = _unbound_row(deployed_db, chat, "written by 0007")
    old = chat.keyring.active.id
    _set_binds_rows(deployed_db, old, False)
    result = rotate(chat.keyring, deployed_db.migrator, vacuum=False)
    # The active key was from before binding: the rotation starts with a new one.
    assert result.generated and result.key_id != old
    assert result.drained == [old] and result.skipped == []
    assert _raw_plaintext(deployed_db, chat, legacy) == (
        f"{FRAME_PREFIX}{legacy} {chat.thread}\x01written by 0007"
    )
    assert _read_as(chat, chat.bob, legacy) == "written by 0007"


def test_a_transaction_holds_only_the_keys_still_in_use(deployed_db: ChatDB, chat: Chat) -> None:
    def keys_in_a_transaction() -> set[str]:
        with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
            value = conn.execute(
                sa.text("SELECT current_setting('app.decryption_keys', true)")
            ).scalar_one()
        return set(json_keys(value))

    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        post_message(conn, chat.thread, "under the first key")
    first = chat.keyring.active.id
    assert keys_in_a_transaction() == {first}
    second = generate_key(chat.keyring, deployed_db.migrator).id
    # A rotation under way: rows under the first key remain, both keys travel.
    assert keys_in_a_transaction() == {first, second}
    rotate(chat.keyring, deployed_db.migrator, vacuum=False)
    # Rotated out (drained): the first key is no longer handed to transactions.
    assert keys_in_a_transaction() == {second}
    # Without a keyring a transaction holds no key at all.
    with user_transaction(chat.engine, chat.alice) as conn:
        assert not conn.execute(
            sa.text("SELECT current_setting('app.decryption_keys', true)")
        ).scalar_one()


def json_keys(value: object) -> list[str]:
    import json

    return list(json.loads(str(value))) if value else []


def test_a_drained_key_cannot_write(deployed_db: ChatDB, chat: Chat, tmp_path: Path) -> None:
    stale = Keyring.load(chat.keyring.path)
    generate_key(chat.keyring, deployed_db.migrator)
    rotate(chat.keyring, deployed_db.migrator, vacuum=False)
    with pytest.raises(sa.exc.DBAPIError, match="was rotated out"):  # noqa: SIM117
        with user_transaction(chat.engine, chat.alice, stale) as conn:
            post_message(conn, chat.thread, "from an instance that did not reload")


def test_an_undecryptable_row_is_skipped_and_listed_by_rotation(
    deployed_db: ChatDB, chat: Chat
) -> None:
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        good = post_message(conn, chat.thread, "fine")
        bad = post_message(conn, chat.thread, "to be corrupted")
    copy_ciphertext_behind_the_trigger(deployed_db, good, bad)
    old = chat.keyring.active.id
    result = rotate(chat.keyring, deployed_db.migrator, vacuum=False)
    assert result.skipped == [str(bad)] and result.rows == 1
    # The key still holds the skipped row: not drained, not retirable.
    assert result.drained == []
    with connect(deployed_db.admin) as conn:
        counts = dict(conn.execute("SELECT key_id, rows FROM chat.encryption_summary()").fetchall())
    assert counts == {result.key_id: 1, old: 1}


def test_new_keys_have_verifiers_bound_to_their_id_and_deployment(
    deployed_db: ChatDB, chat: Chat
) -> None:
    key = chat.keyring.active
    with connect(deployed_db.admin) as conn:
        deployment = registry.deployment_id(conn)
        row = conn.execute(
            "SELECT verifier, verifier_version FROM chat.encryption_keys WHERE id = %s", (key.id,)
        ).fetchone()
        assert row == (registry.verifier(key, deployment), 2)
        # The same verifier moved to another key id does not vouch for the key there.
        conn.execute(
            "INSERT INTO chat.encryption_keys (id, verifier) VALUES ('k-moved', %s)", (row[0],)
        )
        conn.commit()
    with pytest.raises(sa.exc.DBAPIError, match="wrong key for encryption key id"):  # noqa: SIM117
        with user_transaction(chat.engine, chat.alice) as conn:
            conn.execute(
                sa.text(
                    "SELECT set_config('app.encryption_key', :k, true), "
                    "set_config('app.encryption_key_id', 'k-moved', true)"
                ),
                {"k": key.material},
            )
            post_message(conn, chat.thread, "under a moved verifier")


def test_a_verifier_from_before_binding_is_upgraded_on_registration(
    deployed_db: ChatDB, chat: Chat
) -> None:
    key = chat.keyring.active
    with connect(deployed_db.admin) as conn:
        conn.execute(
            "UPDATE chat.encryption_keys SET verifier = %s, verifier_version = 1 WHERE id = %s",
            (registry.verifier(key), key.id),
        )
        conn.commit()
    # Still accepted as version 1...
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        post_message(conn, chat.thread, "under a version 1 verifier")
    with connect(deployed_db.migrator) as conn:
        registry.set_role(conn, deployed_db.migrator, registry.OWNER)
        assert registry.register(conn, key) is False
        conn.commit()
    with connect(deployed_db.admin) as conn:
        row = conn.execute(
            "SELECT verifier_version FROM chat.encryption_keys WHERE id = %s", (key.id,)
        ).fetchone()
    assert row == (2,)
    with user_transaction(chat.engine, chat.alice, chat.keyring) as conn:
        post_message(conn, chat.thread, "under a version 2 verifier")
