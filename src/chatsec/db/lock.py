"""One chatsec command at a time per database: a session advisory lock, held on its own connection.

Every command that changes a chat database (deploy, rollback, restore, the `keys`
commands that write the registry or re-encrypt) takes it first. The connection that
holds it does nothing else and is never in a transaction, so holding the lock for a
long rotation keeps no snapshot open and is invisible to the waits chatsec does for
open transactions. Advisory locks are per database, so one constant key suffices.

Any login of the database can take an advisory lock, the application's too: a
hostile holder can delay chatsec's commands (they give up with its pid and role),
never change what they do.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import psycopg

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.defaults import DEFAULT_WAIT_S
from chatsec.errors import ChatsecError

# pg_advisory_lock(int4, int4): "chat" in ASCII, then 1 for "changes this database".
LOCK_CLASS = 0x63686174
LOCK_OBJECT = 1

_HOLDER = """
SELECT l.pid, a.application_name, a.usename, a.state_change
  FROM pg_catalog.pg_locks l
  LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
 WHERE l.locktype = 'advisory' AND l.granted
   AND l.database = (SELECT oid FROM pg_catalog.pg_database
                      WHERE datname = pg_catalog.current_database())
   AND l.classid = %s AND l.objid = %s AND l.objsubid = 2
"""


@contextmanager
def database_lock(
    url: DatabaseURL, command: str, wait_s: float | None = None, allow_insecure: bool = False
) -> Iterator[None]:
    """Hold chatsec's lock on the database `url` names while the block runs.

    Waits up to `wait_s` seconds (DEFAULT_WAIT_S when None) for another holder, then
    raises one line naming it: its pid, application name (the chatsec command), role
    and since when it holds the lock. `command` becomes this session's application
    name, so a waiting run can say the same of this one.
    """
    wait_s = DEFAULT_WAIT_S if wait_s is None else wait_s
    if wait_s < 0:
        raise ChatsecError(f"--wait must be 0 or more seconds, not {wait_s:g}")
    conn = connect(
        url, autocommit=True, allow_insecure=allow_insecure, application_name=f"chatsec {command}"
    )
    try:
        # lock_timeout bounds the wait on the advisory lock like any heavyweight lock; 0
        # would mean "forever" to PostgreSQL, so no wait is a try-lock instead.
        if wait_s == 0:
            row = conn.execute(
                "SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_OBJECT)
            ).fetchone()
            if not (row and row[0]):
                raise ChatsecError(_busy_message(conn, url, command, wait_s))
        else:
            conn.execute(f"SET lock_timeout = {max(1, round(wait_s * 1000))}")
            try:
                conn.execute(
                    "SELECT pg_catalog.pg_advisory_lock(%s, %s)", (LOCK_CLASS, LOCK_OBJECT)
                )
            except psycopg.errors.LockNotAvailable:
                raise ChatsecError(_busy_message(conn, url, command, wait_s)) from None
            conn.execute("RESET lock_timeout")
        yield
    finally:
        # Closing the session releases the lock, also when the work in between failed.
        conn.close()


def _busy_message(
    conn: psycopg.Connection[tuple[object, ...]], url: DatabaseURL, command: str, wait_s: float
) -> str:
    row = conn.execute(_HOLDER, (LOCK_CLASS, LOCK_OBJECT)).fetchone()
    waited = f"after waiting {wait_s:g} s" if wait_s else "without waiting"
    if row is None:
        # Released between the timeout and this look: the caller may simply retry.
        return f"{command} gave up {waited}: another command held the lock on {url.target}; retry"
    pid, application, role, since = row
    who = str(application) if application else "a session"
    when = (
        f"since {since:%Y-%m-%d %H:%M:%S %Z}".rstrip()
        if isinstance(since, datetime)
        else "since a time this login may not see"
    )
    return (
        f"{command} gave up {waited}: {who} (pid {pid}, role {role or 'unknown'}) holds "
        f"chatsec's lock on {url.target} {when}; retry when it ends, or raise --wait"
    )
