"""What only a superuser can close (large objects), and deploys that refuse until it is."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from chatsec.cli.main import cli
from chatsec.db.connect import connect
from chatsec.migrate import runner
from chatsec.ops.harden import public_large_object_functions
from chatsec.sandbox import Sandbox
from tests.conftest import ChatDB


@pytest.fixture()
def pristine_db(sandbox: Sandbox) -> Iterator[ChatDB]:
    """A database made from template0, as an administrator would make one elsewhere:
    the large-object functions are PUBLIC's and PUBLIC may connect and create temp tables."""
    name = f"t_{secrets.token_hex(5)}"
    with sandbox.admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 OWNER chatsec_migrator')
    yield ChatDB(name, sandbox)
    sandbox.drop_database(name)


def _deploy(db: ChatDB) -> Result:
    return CliRunner().invoke(cli, ["deploy", "--database-url", db.migrator.libpq])


def test_deploy_refuses_until_a_superuser_closes_large_objects(pristine_db: ChatDB) -> None:
    refused = _deploy(pristine_db)
    assert refused.exit_code == 2
    line = refused.output.strip()
    assert "\n" not in line and "chatsec harden-database" in line and "lo_create" in line
    assert runner.status(pristine_db.migrator).current == ()  # nothing applied
    args = ["harden-database", "--database-url"]
    done = CliRunner().invoke(cli, [*args, pristine_db.admin.libpq])
    assert done.exit_code == 0 and "revoked EXECUTE from PUBLIC on" in done.output
    again = CliRunner().invoke(cli, [*args, pristine_db.admin.libpq])
    assert again.exit_code == 0 and "nothing to do" in again.output
    assert _deploy(pristine_db).exit_code == 0
    with connect(pristine_db.admin) as conn:
        assert public_large_object_functions(conn) == []
        # PUBLIC's CONNECT and TEMPORARY went with the deploy; the declared grants came.
        acl = conn.execute(
            "SELECT datacl::text[] FROM pg_database WHERE datname = current_database()"
        ).fetchone()
    assert acl is not None
    entries = {e.split("/")[0] for e in acl[0]}
    assert "app_user=c" in entries and "chat_auditor=Tc" in entries
    assert not any(e.startswith("=") for e in entries)


def test_harden_database_needs_a_superuser(pristine_db: ChatDB) -> None:
    result = CliRunner().invoke(
        cli, ["harden-database", "--database-url", pristine_db.migrator.libpq]
    )
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0 and "not a superuser" in result.output


def test_a_migrator_that_does_not_own_the_database_cannot_leave_temporary_open(
    sandbox: Sandbox,
) -> None:
    # The administrator owns the database and gave the migrator only CREATE: revoking
    # PUBLIC's TEMPORARY is then a silent no-op in PostgreSQL, so 0007 verifies and fails.
    name = f"t_{secrets.token_hex(5)}"
    with sandbox.admin_connect() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
        conn.execute(f'GRANT CREATE ON DATABASE "{name}" TO chatsec_migrator')
    try:
        with sandbox.admin_connect(name) as conn:
            conn.execute("GRANT CREATE ON SCHEMA public TO chatsec_migrator")
        db = ChatDB(name, sandbox)
        refused = _deploy(db)
        assert refused.exit_code == 2
        assert "can still create temporary objects" in refused.output
        assert "the migrator must own the database" in refused.output
    finally:
        sandbox.drop_database(name)
