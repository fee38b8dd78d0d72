"""Acting for one chat user, for exactly one transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from uuid import UUID

import sqlalchemy as sa

from chatsec.errors import ChatsecError

# is_local = true: PostgreSQL drops the setting when the transaction ends, so a
# pooled connection never carries one user's identity into the next transaction.
_SET_LOCAL = sa.text("SELECT pg_catalog.set_config(:name, :value, true)")


def set_local(conn: sa.Connection, name: str, value: str) -> None:
    """A transaction-local setting, the value always a bind parameter."""
    conn.execute(_SET_LOCAL, {"name": name, "value": value})


@contextmanager
def user_transaction(engine: sa.Engine, user_id: UUID | str) -> Iterator[sa.Connection]:
    """A transaction acting for `user_id`: committed on success, rolled back on error."""
    try:
        uid = str(UUID(str(user_id)))
    except ValueError:
        raise ChatsecError(f"not a user id (UUID expected): {user_id!r}") from None
    with engine.begin() as conn:
        set_local(conn, "app.user_id", uid)
        yield conn
