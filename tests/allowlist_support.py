"""Shared by the allowlist and HTML report tests: deployed databases with known breakages."""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from click.testing import CliRunner, Result

from chatsec.cli.main import cli
from chatsec.sandbox import Sandbox
from tests.conftest import ChatDB

# Each fires exactly one existing check (see tests/test_audit.py), with these objects.
GRANT_TRUNCATE = "GRANT TRUNCATE ON chat.messages TO app_user"  # app-user-grants
GRANT_OBJECT = "chat.messages to app_user"
GRANT_FIX = "REVOKE TRUNCATE ON TABLE chat.messages FROM app_user"
NO_FORCE_RLS = "ALTER TABLE chat.messages NO FORCE ROW LEVEL SECURITY"  # rls-forced
RLS_OBJECT = "chat.messages"


@contextmanager
def broken_database(sandbox: Sandbox, template: str, statements: Sequence[str]) -> Iterator[ChatDB]:
    """A database at head (its own: dropped afterwards) with `statements` run as superuser."""
    db = ChatDB(f"t_{secrets.token_hex(5)}", sandbox)
    sandbox.create_database(db.name, template=template)
    try:
        with sandbox.admin_connect(db.name) as conn:
            for statement in statements:
                conn.execute(statement)
        yield db
    finally:
        sandbox.drop_database(db.name)


# Nothing listens on port 1: an error about anything else proves it came before connecting.
UNREACHABLE = "postgresql://u:p@127.0.0.1:1/x?sslmode=verify-full"


def invoke_audit(database_url: str, *args: str) -> Result:
    """`chatsec audit` at `database_url`, probes off; stdout and stderr kept apart."""
    return CliRunner().invoke(
        cli,
        ["audit", "--database-url", database_url, "--no-probe", *args],
        env={"CHATSEC_AUDIT_DATABASE_URL": "", "CHATSEC_APP_DATABASE_URL": ""},
        catch_exceptions=False,
    )
