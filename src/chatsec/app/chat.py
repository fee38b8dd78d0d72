"""Small chat operations that need more than one statement to respect the policies."""

from __future__ import annotations

import uuid
from uuid import UUID

import sqlalchemy as sa


def register_user(conn: sa.Connection, user_id: UUID, email: str, username: str, **profile: str) -> None:
    """Create the user row for the transaction's own identity (policy users_insert_self)."""
    cols = {"id": user_id, "email": email, "username": username, **profile}
    names = ", ".join(cols)
    binds = ", ".join(f":{k}" for k in cols)
    conn.execute(sa.text(f"INSERT INTO chat.users ({names}) VALUES ({binds})"), cols)


def create_thread(conn: sa.Connection, name: str | None, is_direct: bool = False) -> UUID:
    """Create a thread and make the transaction's user its owner, in one transaction.

    The id is made here: the new thread is not visible to its creator (no
    participant yet) until the second statement, so INSERT ... RETURNING would fail.
    """
    thread_id = uuid.uuid4()
    conn.execute(
        sa.text(
            "INSERT INTO chat.threads (id, name, is_direct, created_by) "
            "VALUES (:id, :name, :is_direct, chat.current_user_id())"
        ),
        {"id": thread_id, "name": name, "is_direct": is_direct},
    )
    conn.execute(
        sa.text(
            "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
            "VALUES (:id, chat.current_user_id(), 'owner')"
        ),
        {"id": thread_id},
    )
    return thread_id


def add_participant(conn: sa.Connection, thread_id: UUID, user_id: UUID, role: str = "member") -> None:
    conn.execute(
        sa.text(
            "INSERT INTO chat.thread_participants (thread_id, user_id, role) "
            "VALUES (:thread_id, :user_id, :role)"
        ),
        {"thread_id": thread_id, "user_id": user_id, "role": role},
    )


def post_message(
    conn: sa.Connection, thread_id: UUID, content: str, parent_id: UUID | None = None
) -> UUID:
    message_id = uuid.uuid4()
    conn.execute(
        sa.text(
            "INSERT INTO chat.messages (id, thread_id, user_id, content, parent_id) "
            "VALUES (:id, :thread_id, chat.current_user_id(), :content, :parent_id)"
        ),
        {"id": message_id, "thread_id": thread_id, "content": content, "parent_id": parent_id},
    )
    return message_id
