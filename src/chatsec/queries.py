"""The design's common queries, run inside a chatsec.app user transaction.

    with user_transaction(engine, alice, keyring) as conn:
        threads = thread_list(conn, limit=20)
        page = message_history(conn, threads[0].id, limit=50)
        older = message_history(conn, threads[0].id, before=page[-1].cursor, limit=50)

Row-level security does the scoping: nothing here names the user, the policies read
app.user_id. Statement texts are constants, so psycopg's automatic preparation
(PoolSettings.prepare_threshold) turns each into one server-side prepared statement.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from chatsec.errors import ChatsecError

MAX_LIMIT = 500

# The seed design's Thread List, word for word (only schema-qualified). Its joins
# multiply participants x messages per thread before COUNT DISTINCT folds them back:
# a thread with 20 members and 10,000 messages aggregates 200,000 rows. Kept for the
# benchmark and as the reference the rewrite is tested against. :last_read is one
# timestamp for every thread.
THREAD_LIST_DESIGN = """
SELECT t.*,
       COUNT(DISTINCT tp.user_id) as participant_count,
       COUNT(DISTINCT m.id) as message_count,
       COUNT(DISTINCT CASE WHEN m.created_at > :last_read THEN m.id END) as unread_count
FROM chat.threads t
LEFT JOIN chat.thread_participants tp ON tp.thread_id = t.id
LEFT JOIN chat.messages m ON m.thread_id = t.id
WHERE t.id IN (
  SELECT thread_id
  FROM chat.thread_participants
  WHERE user_id = :user_id
)
GROUP BY t.id
ORDER BY t.last_message_at DESC
LIMIT :limit OFFSET :offset
"""

# The seed design's Message History, word for word (only schema-qualified). Under RLS
# chat.users shows the caller only their own row, so for the application it returns
# the caller's own messages only: an application wants chatsec.queries.message_history
# (authors from chat.user_profiles). m.* is the ciphertext. Kept for the benchmark: an
# application's natural SQL must not fall off a plan cliff under RLS.
MESSAGE_HISTORY_DESIGN = """
SELECT m.*,
       u.username,
       u.profile_image,
       COUNT(a.id) as attachment_count
FROM chat.messages m
JOIN chat.users u ON u.id = m.user_id
LEFT JOIN chat.attachments a ON a.message_id = m.id
WHERE m.thread_id = :thread_id
  AND m.created_at < :before
GROUP BY m.id, u.id
ORDER BY m.created_at DESC
LIMIT :limit
"""

# The rewrite: start from the caller's own participant rows (idx_thread_participants_user),
# page first, then count per thread of the page only, each count an index-only scan
# (participants' primary key, idx_messages_thread). Nothing multiplies. Unread is per
# thread against the caller's own last_read_at; never read (NULL) means all unread.
# `(SELECT chat.current_user_id())` is an InitPlan: evaluated once, not once per row.
# t.id breaks ties in last_message_at so OFFSET paging is stable.
_THREAD_PAGE = """
SELECT t.id, t.name, t.is_direct, t.is_archived, t.created_by, t.last_message_at,
       t.created_at, t.updated_at, me.last_read_at
  FROM chat.thread_participants me
  JOIN chat.threads t ON t.id = me.thread_id
 WHERE me.user_id = {me}
 ORDER BY t.last_message_at DESC, t.id
 LIMIT :limit OFFSET :offset
"""
_THREAD_ORDER = "ORDER BY p.last_message_at DESC, p.id"
# Under RLS the counts come from chat.my_thread_counts() (policies/functions.toml):
# counted directly, every counted row would pass the messages policy's hashed
# membership probe, which made this query 3x slower than without RLS.
THREAD_LIST = f"""
WITH p AS ({_THREAD_PAGE.format(me="(SELECT chat.current_user_id())")})
SELECT p.*, COALESCE(c.participant_count, 0) AS participant_count,
       COALESCE(c.message_count, 0) AS message_count,
       COALESCE(c.unread_count, 0) AS unread_count
  FROM p
  LEFT JOIN chat.my_thread_counts(ARRAY(SELECT p.id FROM p)) c ON c.thread_id = p.id
 {_THREAD_ORDER}
"""
# The same page counted inline, with the caller as a bind parameter: the benchmark's
# baseline for a session that RLS does not bind (the superuser). Nothing in it depends
# on a policy: every counted row belongs to a thread the caller is in.
THREAD_LIST_EXPLICIT = f"""
WITH p AS ({_THREAD_PAGE.format(me="CAST(:user_id AS uuid)")})
SELECT p.*,
       (SELECT count(*) FROM chat.thread_participants tp
         WHERE tp.thread_id = p.id) AS participant_count,
       (SELECT count(*) FROM chat.messages m
         WHERE m.thread_id = p.id) AS message_count,
       (SELECT count(*) FROM chat.messages m
         WHERE m.thread_id = p.id
           AND m.created_at > COALESCE(p.last_read_at, '-infinity')) AS unread_count
  FROM p
 {_THREAD_ORDER}
"""

# Message History: the design's columns, newest first, keyset-paginated. Rows that
# share created_at (a batch insert is one transaction, so one CURRENT_TIMESTAMP) are
# ordered by id, so the cursor is (created_at, id) and no page boundary drops a row;
# idx_messages_thread is (thread_id, created_at DESC, id DESC), that same order, so a
# page reads its rows in order and stops. The page is cut first and decrypted after:
# chat.decrypt_message runs for the rows returned, never for rows a sort would discard.
# Attachments are counted per message with a scalar subquery instead of the design's
# GROUP BY m.id, u.id. Authors are looked up once per distinct author of the page
# (`= ANY(ARRAY(...))` is leakproof, so it reaches into the security-barrier view as
# an index condition): per row, each lookup repeated the view's contact check. They
# come from chat.user_profiles: under RLS chat.users shows the caller only their own
# row (private columns stay private); the explicit baseline, a superuser that RLS does
# not bind, reads chat.users.
_HISTORY = """
WITH p AS (
  SELECT m.id, m.thread_id, m.user_id, m.content, m.key_id, m.parent_id, m.status,
         m.metadata, m.created_at, m.updated_at
    FROM chat.messages m
   WHERE m.thread_id = :thread_id {keyset} {member}
   ORDER BY m.created_at DESC, m.id DESC
   LIMIT :limit
)
SELECT p.id, p.thread_id, p.user_id,
       chat.decrypt_message(p.content, p.key_id, p.id, p.thread_id) AS content,
       p.parent_id, p.status, p.metadata, p.created_at, p.updated_at,
       u.username, u.profile_image,
       (SELECT count(*) FROM chat.attachments a WHERE a.message_id = p.id) AS attachment_count
  FROM p
  JOIN (SELECT u.id, u.username, u.profile_image FROM {authors} u
         WHERE u.id = ANY (ARRAY(SELECT DISTINCT p.user_id FROM p))) u ON u.id = p.user_id
 ORDER BY p.created_at DESC, p.id DESC
"""
_FIRST_PAGE = ""
_NEXT_PAGE = "AND (m.created_at, m.id) < (:before, :before_id)"
_NEXT_PAGE_BY_TIME = "AND m.created_at < :before"
# The benchmark's RLS-bypassed baseline: the caller's membership, said explicitly.
_MEMBER = (
    "AND EXISTS (SELECT 1 FROM chat.thread_participants tp "
    "WHERE tp.thread_id = m.thread_id AND tp.user_id = CAST(:user_id AS uuid))"
)


def history_sql(keyset: str = "first", explicit_member: bool = False) -> str:
    """The Message History statement: keyset 'first', 'next' ((created_at, id)) or 'time'."""
    clause = {"first": _FIRST_PAGE, "next": _NEXT_PAGE, "time": _NEXT_PAGE_BY_TIME}[keyset]
    return _HISTORY.format(
        keyset=clause,
        member=_MEMBER if explicit_member else "",
        authors="chat.users" if explicit_member else "chat.user_profiles",
    )


@dataclass(frozen=True)
class ThreadSummary:
    id: UUID
    name: str | None
    is_direct: bool
    is_archived: bool
    created_by: UUID | None
    last_message_at: datetime | None
    created_at: datetime
    updated_at: datetime
    last_read_at: datetime | None
    participant_count: int
    message_count: int
    unread_count: int


@dataclass(frozen=True)
class Cursor:
    """Where the next (older) page starts: the last row's (created_at, id)."""

    created_at: datetime
    id: UUID


@dataclass(frozen=True)
class HistoryMessage:
    id: UUID
    thread_id: UUID
    user_id: UUID
    content: str | None  # None: could not be decrypted (a WARNING names the message)
    parent_id: UUID | None
    status: str | None
    metadata: Any
    created_at: datetime
    updated_at: datetime
    username: str
    profile_image: str | None
    attachment_count: int

    @property
    def cursor(self) -> Cursor:
        return Cursor(self.created_at, self.id)


@dataclass(frozen=True)
class NewMessage:
    thread_id: UUID
    content: str
    parent_id: UUID | None = None
    id: UUID | None = None


def _check_page(limit: int, offset: int = 0) -> None:
    if not 1 <= limit <= MAX_LIMIT:
        raise ChatsecError(f"limit must be between 1 and {MAX_LIMIT}, not {limit}")
    if offset < 0:
        raise ChatsecError(f"offset must not be negative, not {offset}")


def thread_list(conn: sa.Connection, limit: int = 20, offset: int = 0) -> list[ThreadSummary]:
    """The caller's threads, most recently active first, with their counts."""
    _check_page(limit, offset)
    rows = conn.execute(sa.text(THREAD_LIST), {"limit": limit, "offset": offset}).mappings()
    return [ThreadSummary(**row) for row in rows]


def message_history(
    conn: sa.Connection,
    thread_id: UUID,
    before: Cursor | datetime | None = None,
    limit: int = 50,
) -> list[HistoryMessage]:
    """A page of a thread's messages older than `before` (newest first), decrypted.

    `before` is a Cursor (the previous page's last row) or, as in the design, a bare
    timestamp (then rows sharing that exact created_at are skipped). A thread the
    caller is not in gives an empty page: the policies hide its messages.
    The transaction needs the keyring (user_transaction(..., keyring)) to decrypt.
    """
    _check_page(limit)
    params: dict[str, object] = {"thread_id": thread_id, "limit": limit}
    if before is None:
        keyset = "first"
    elif isinstance(before, Cursor):
        keyset = "next"
        params |= {"before": before.created_at, "before_id": before.id}
    else:
        keyset = "time"
        params["before"] = before
    rows = conn.execute(sa.text(history_sql(keyset)), params).mappings()
    return [HistoryMessage(**row) for row in rows]


# One statement for the whole batch: the arrays travel as two bind parameters, so N
# messages cost one round trip and one statement execution (multi-array unnest is
# grammar, so it cannot be schema-qualified; the trigger still
# encrypts each row, and the insert policy checks each row).
_POST_MANY = """
INSERT INTO chat.messages (id, thread_id, user_id, content, parent_id)
SELECT b.id, b.thread_id, chat.current_user_id(), b.content, b.parent_id
  FROM unnest(CAST(:ids AS uuid[]), CAST(:thread_ids AS uuid[]),
                         CAST(:contents AS text[]), CAST(:parent_ids AS uuid[]))
       AS b(id, thread_id, content, parent_id)
"""


def post_messages(conn: sa.Connection, messages: Sequence[NewMessage]) -> list[UUID]:
    """Insert many messages as the transaction's user in one round trip; their ids, in order."""
    if not messages:
        return []
    ids = [m.id or uuid.uuid4() for m in messages]
    conn.execute(
        sa.text(_POST_MANY),
        {
            "ids": ids,
            "thread_ids": [m.thread_id for m in messages],
            "contents": [m.content for m in messages],
            "parent_ids": [m.parent_id for m in messages],
        },
    )
    return ids
