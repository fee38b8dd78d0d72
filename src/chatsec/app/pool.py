"""What one request must never hand to the next on a pooled application connection.

The application login may run hostile SQL (one injectable query is enough). Whatever
that SQL leaves in its session (a WITH HOLD cursor full of someone's messages, a
session setting that logs bind parameters, a LISTEN, an advisory lock, a prepared
statement redefined under the driver's own name) must be gone before the connection
serves anyone else, and role defaults it sets on its own login must not change how
later sessions log or behave. docs/threat-model.md has the whole list.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psycopg
from psycopg import pq

log = logging.getLogger("chatsec.app")

# Settings every application session starts with, sent as startup options: a client
# option outranks `ALTER ROLE ... SET` and `ALTER DATABASE ... SET`, and the login may
# set its own role's defaults for any user-settable parameter. PoolSettings.session_settings
# overrides or extends these (a statement_timeout, say).
PINNED_SETTINGS: dict[str, str] = {
    "search_path": "chat",
    # Nothing the application binds (keys, message text) may reach the server log.
    "log_parameter_max_length_on_error": "0",
    "debug_print_parse": "off",
    "debug_print_rewritten": "off",
    "debug_print_plan": "off",
    # What the policies, the encryption trigger and the pool rely on.
    "row_security": "on",
    "default_transaction_read_only": "off",
    "default_transaction_isolation": "read committed",
    "default_transaction_deferrable": "off",
    "synchronous_commit": "on",
    "exit_on_error": "off",
    "statement_timeout": "0",
    "lock_timeout": "0",
    "idle_in_transaction_session_timeout": "0",
    "idle_session_timeout": "0",
    # How statements and values are read and written.
    "standard_conforming_strings": "on",
    "backslash_quote": "safe_encoding",
    "transform_null_equals": "off",
    "array_nulls": "on",
    "DateStyle": "ISO, MDY",
    "IntervalStyle": "postgres",
    "bytea_output": "hex",
    "client_min_messages": "notice",
}

# DISCARD ALL without DEALLOCATE ALL and DISCARD PLANS: one round trip that removes
# cursors, session settings (back to the startup options), LISTENs, advisory locks,
# sequence state and temporary objects, then lists the prepared statements so that
# the driver's may be kept when nobody touched them.
_RESET = (
    "CLOSE ALL; RESET ALL; UNLISTEN *; SELECT pg_catalog.pg_advisory_unlock_all(); "
    "DISCARD SEQUENCES; DISCARD TEMP; "
    "SELECT name, from_sql FROM pg_catalog.pg_prepared_statements"
)
_ROLE_DEFAULTS = (
    "SELECT name FROM pg_catalog.pg_settings WHERE source IN ('user', 'database user') "
    "ORDER BY name"
)


def startup_options(settings: Mapping[str, str]) -> str:
    """libpq's `options`: `-c name=value` each, spaces and backslashes escaped."""
    parts = []
    for name, value in settings.items():
        escaped = value.replace("\\", "\\\\").replace(" ", "\\ ")
        parts.append(f"-c {name}={escaped}")
    return " ".join(parts)


def _driver_statements(conn: psycopg.Connection[Any]) -> set[str] | None:
    """Names of the statements psycopg prepared on `conn`; None if it cannot be known."""
    manager = getattr(conn, "_prepared", None)
    names = getattr(manager, "_names", None)
    if names is None:
        return None
    return {bytes(n).decode() for n in names.values()}


def reset_session(conn: psycopg.Connection[Any]) -> bool:
    """Return `conn` to the state of a new session; True if prepared statements were dropped.

    psycopg's own prepared statements survive unless something else touched the
    namespace they live in: a statement created with SQL PREPARE (even under one of
    psycopg's names, to redefine what it executes), or one of psycopg's removed with
    SQL DEALLOCATE. Then everything is deallocated with DISCARD ALL, which psycopg
    recognises and answers by forgetting its own cache. Raises psycopg.Error when the
    session cannot be reset (the pool then discards the connection).
    """
    if conn.info.transaction_status != pq.TransactionStatus.IDLE:
        raise psycopg.OperationalError("connection returned to the pool inside a transaction")
    autocommit = conn.autocommit
    conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute(_RESET, prepare=False)
        while cur.nextset():
            pass
        server = {str(name): bool(from_sql) for name, from_sql in cur.fetchall()}
        expected = _driver_statements(conn)
        tampered = (
            expected is None
            or any(server.values())
            or {name for name, from_sql in server.items() if not from_sql} != expected
        )
        if tampered:
            conn.execute("DISCARD ALL", prepare=False)
        return tampered
    finally:
        conn.autocommit = autocommit


def warn_about_role_defaults(conn: psycopg.Connection[Any], pinned: Mapping[str, str]) -> list[str]:
    """Role-level defaults of the login that the startup options do not override.

    The login may `ALTER ROLE CURRENT_USER SET` any user-settable parameter (an attacker
    with its SQL could slow or break the application that way); `chatsec audit` reports
    them and an administrator removes them with `ALTER ROLE ... RESET ALL`.
    """
    pinned_names = {name.lower() for name in pinned}
    extra = [
        str(row[0])
        for row in conn.execute(_ROLE_DEFAULTS, prepare=False).fetchall()
        if str(row[0]).lower() not in pinned_names
    ]
    if extra:
        log.warning(
            "login %s has role-level defaults chatsec does not pin: %s "
            "(an administrator should ALTER ROLE ... RESET them)",
            conn.info.user,
            ", ".join(extra),
        )
    return extra
