"""Acting for one chat user, for exactly one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import sqlalchemy as sa

from chatsec.app.engine import engine_signer
from chatsec.errors import ChatsecError
from chatsec.identity import Signer
from chatsec.keys.keyring import Keyring
from chatsec.keys.transaction import IDENTITY_ONLY, TRANSACTION_SETTINGS, transaction_parameters

# is_local = true: PostgreSQL drops the setting when the transaction ends, so a
# pooled connection never carries one user's identity (or keys) into the next transaction.
_SET_LOCAL = sa.text("SELECT pg_catalog.set_config(:name, :value, true)")


def set_local(conn: sa.Connection, name: str, value: str) -> None:
    """A transaction-local setting, the value always a bind parameter."""
    conn.execute(_SET_LOCAL, {"name": name, "value": value})


@contextmanager
def user_transaction(
    engine: sa.Engine,
    user_id: UUID | str,
    keyring: Keyring | None = None,
    *,
    identity: Signer | None = None,
) -> Iterator[sa.Connection]:
    """A transaction acting for `user_id`: committed on success, rolled back on error.

    The identity is a token signed for this user with the identity keyring (`identity`,
    else the engine's: create_app_engine(identity=...) or $CHATSEC_IDENTITY_KEYRING),
    valid for statements that start within its lifetime; the database verifies it
    (docs/identity.md). No identity keyring is an error, never an anonymous transaction.

    With a keyring, messages written are encrypted with its active key and
    chat.messages_decrypted reads with its readable keys that the registry still reads
    with (docs/encryption.md). Without one, writing a message fails (no key) and
    reading gives no content. Pass the keyring only to transactions that need it: any
    SQL in the transaction can read the keys it holds. Identity and keys are set in one
    statement.
    """
    try:
        uid = UUID(str(user_id))
    except ValueError:
        raise ChatsecError(f"not a user id (UUID expected): {user_id!r}") from None
    signer = identity or engine_signer(engine)
    token = signer.token(uid)
    with engine.begin() as conn:
        statement = IDENTITY_ONLY if keyring is None else TRANSACTION_SETTINGS
        conn.exec_driver_sql(statement, transaction_parameters(token, keyring))
        yield conn
