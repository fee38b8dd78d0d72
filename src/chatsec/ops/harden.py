"""What only a superuser can close in a chat database: the large-object functions.

Large objects live outside every table, so outside row-level security and the
encryption trigger, and PostgreSQL lets any role create them (EXECUTE on
pg_catalog.lo_create and friends is granted to PUBLIC). An application login with
hostile SQL could park data there for a later request. The functions belong to the
bootstrap superuser, so the migrator cannot revoke them: `chatsec harden-database`
does, once per database, and revision 0007 refuses to deploy until it is done.
"""

from __future__ import annotations

from typing import Any

import psycopg

from chatsec.errors import ChatsecError

# Every server-side large-object function: lo_* plus the historical loread/lowrite.
LARGE_OBJECT_FUNCTIONS = """
SELECT p.oid::pg_catalog.regprocedure::text
  FROM pg_catalog.pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
   AND (p.proname LIKE 'lo\\_%' OR p.proname IN ('loread', 'lowrite'))
   AND pg_catalog.has_function_privilege('public', p.oid, 'EXECUTE')
 ORDER BY 1
"""


def public_large_object_functions(conn: psycopg.Connection[Any]) -> list[str]:
    """The large-object functions PUBLIC may still execute in this database."""
    return [str(row[0]) for row in conn.execute(LARGE_OBJECT_FUNCTIONS).fetchall()]


def close_large_objects(conn: psycopg.Connection[Any]) -> list[str]:
    """Revoke EXECUTE on every large-object function from PUBLIC; the ones revoked.

    Needs a superuser (the functions' owner is the bootstrap superuser). Idempotent.
    """
    row = conn.execute(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
    ).fetchone()
    if not row or not row[0]:
        raise ChatsecError(
            f"{conn.info.user} is not a superuser: only a superuser can revoke the "
            "large-object functions (owned by the bootstrap superuser) from PUBLIC"
        )
    revoked = public_large_object_functions(conn)
    for function in revoked:
        conn.execute(f"REVOKE EXECUTE ON FUNCTION {function} FROM PUBLIC")
    if public_large_object_functions(conn):
        raise ChatsecError("large-object functions are still executable by PUBLIC after REVOKE")
    return revoked
