"""Where the benchmark runs: a dedicated database on the sandbox or on given logins."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from psycopg import sql

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.ops.harden import close_large_objects
from chatsec.sandbox import Sandbox
from chatsec.sandbox.cluster import DATABASE_GRANTS

# Group roles of the logins that need to connect (as the sandbox locks its databases).
_CONNECT_ROLES = tuple(DATABASE_GRANTS)


@dataclass(frozen=True)
class Logins:
    """Login URLs for one cluster; their database part is replaced per bench database."""

    migrator: DatabaseURL
    app: DatabaseURL
    admin: DatabaseURL
    auditor: DatabaseURL | None = None

    def on(self, database: str) -> Logins:
        return Logins(
            self.migrator.with_database(database),
            self.app.with_database(database),
            self.admin.with_database(database),
            None if self.auditor is None else self.auditor.with_database(database),
        )


def sandbox_logins(directory: Path) -> Logins:
    """Start (or reuse) the sandbox in `directory`, as `chatsec demo` does."""
    box = Sandbox(directory)
    box.start()
    urls = box.urls()
    return Logins(
        DatabaseURL.parse(urls["migrator"]),
        DatabaseURL.parse(urls["app"]),
        DatabaseURL.parse(urls["admin"]),
        DatabaseURL.parse(urls["auditor"]),
    )


def _require_superuser(admin: DatabaseURL) -> None:
    with connect(admin, autocommit=True, application_name="chatsec bench") as conn:
        row = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").fetchone()
    if not row or not row[0]:
        # The baseline of every RLS comparison is a session RLS does not bind: under
        # FORCE ROW LEVEL SECURITY only a superuser (or BYPASSRLS) is one.
        raise ChatsecError(
            f"--admin-url must be a superuser login ({admin.user} is not): "
            "the benchmark's RLS-bypassed baseline and its data generator need one"
        )


def create_database(logins: Logins, prefix: str = "chatsec_bench") -> str:
    """A new empty database owned by the migrator login, closed to PUBLIC like the sandbox's."""
    _require_superuser(logins.admin)
    name = f"{prefix}_{secrets.token_hex(4)}"
    owner = logins.migrator.user
    if not owner:
        raise ChatsecError("the migrator URL names no user")
    with connect(logins.admin, autocommit=True, application_name="chatsec bench") as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(name), sql.Identifier(owner)
            )
        )
        conn.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name)))
        roles = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (list(_CONNECT_ROLES),)
        ).fetchall()
        for (role,) in roles:
            privileges = DATABASE_GRANTS.get(str(role), "CONNECT")
            conn.execute(
                sql.SQL(f"GRANT {privileges} ON DATABASE {{}} TO {{}}").format(
                    sql.Identifier(name), sql.Identifier(str(role))
                )
            )
    with connect(logins.admin.with_database(name), autocommit=True) as conn:
        close_large_objects(conn)
    return name


def drop_database(logins: Logins, name: str) -> None:
    with connect(logins.admin, autocommit=True, application_name="chatsec bench") as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextmanager
def scratch_database(
    logins: Logins, keep: bool = False, prefix: str = "chatsec_bench"
) -> Iterator[str]:
    """A dedicated database for the duration of the block; dropped after unless `keep`."""
    name = create_database(logins, prefix)
    try:
        yield name
    finally:
        if not keep:
            drop_database(logins, name)
