"""Bad input gets one clear line and exit 2, never a traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from chatsec.cli.main import cli
from tests.conftest import ChatDB


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env or {})
    return result.exit_code, result.output


def _assert_one_line_error(code: int, out: str, needle: str) -> None:
    assert code == 2, out
    lines = [ln for ln in out.splitlines() if ln.strip()]
    assert len(lines) == 1, out
    assert lines[0].startswith("chatsec: error:")
    assert needle in lines[0]
    assert "Traceback" not in out


@pytest.fixture()
def no_tls_server() -> Iterator[int]:
    """A TCP peer that answers PostgreSQL's SSLRequest with 'N', as a server without TLS does."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    srv.settimeout(10)
    port = srv.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = srv.accept()
            conn.recv(8)
            conn.sendall(b"N")
            conn.recv(1024)
            conn.close()
        except OSError:
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield port
    srv.close()


def test_missing_url() -> None:
    code, out = _run("status", env={"CHATSEC_DATABASE_URL": ""})
    _assert_one_line_error(code, out, "no database URL")


def test_malformed_url() -> None:
    code, out = _run("status", "--database-url", "mysql://x@y/z")
    _assert_one_line_error(code, out, "not a PostgreSQL URL")


def test_unreachable_host() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"postgresql://u:p@127.0.0.1:{port}/chat?sslmode=verify-full"
    code, out = _run("deploy", "--database-url", url)
    _assert_one_line_error(code, out, "cannot connect")


def test_wrong_password_is_reported_without_the_password(deployed_db: ChatDB) -> None:
    url = deployed_db.migrator.with_credentials("chatsec_migrator", "not-the-password-42")
    code, out = _run("status", "--database-url", url.libpq)
    _assert_one_line_error(code, out, "password authentication failed")
    assert "not-the-password-42" not in out


def test_server_without_tls_when_the_url_demands_it(no_tls_server: int) -> None:
    url = f"postgresql://u:p@127.0.0.1:{no_tls_server}/chat?sslmode=verify-full"
    code, out = _run("status", "--database-url", url)
    _assert_one_line_error(code, out, "SSL")


def test_weak_sslmode_is_refused(deployed_db: ChatDB) -> None:
    url = deployed_db.migrator.with_query(sslmode="require")
    code, out = _run("status", "--database-url", url.libpq)
    _assert_one_line_error(code, out, "refusing sslmode=require")


def test_unknown_revision(deployed_db: ChatDB) -> None:
    code, out = _run("deploy", "--database-url", deployed_db.migrator.libpq, "--to", "nope")
    _assert_one_line_error(code, out, "nope")


def test_status_and_deploy_sql(deployed_db: ChatDB) -> None:
    code, out = _run("status", "--database-url", deployed_db.migrator.libpq)
    assert code == 0 and "pending:  none" in out
    code, out = _run("deploy", "--sql")
    assert code == 0 and "CREATE POLICY" in out
