"""A real sandbox cluster: TLS-only access, roles, secrets, restarts and crash recovery."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import stat
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.sandbox import ENV_VARS, LOGINS, Sandbox, find_bindir
from chatsec.tls import make_ca

IS_ROOT = os.geteuid() == 0


def _fresh_dir() -> Path:
    return Path(tempfile.mkdtemp(dir="/var/tmp", prefix="chatsec-test-"))


@pytest.fixture(scope="module")
def sandbox() -> Iterator[Sandbox]:
    sb = Sandbox(_fresh_dir())
    try:
        sb.start()
        yield sb
    finally:
        sb.stop()
        shutil.rmtree(sb.directory, ignore_errors=True)


def _processes_using(data_dir: Path) -> list[int]:
    """Independent of Sandbox: pids whose cwd or command line names data_dir."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cwd == str(data_dir) or str(data_dir) in cmdline:
            found.append(int(entry.name))
    return found


def _with_query(url: str, **params: str) -> str:
    return DatabaseURL.parse(url).with_query(**params).libpq


def test_binaries_have_initdb_and_pg_ctl() -> None:
    bindir = find_bindir()
    assert (bindir / "initdb").is_file()
    assert (bindir / "pg_ctl").is_file()


def test_each_login_connects_with_verify_full(sandbox: Sandbox) -> None:
    urls = sandbox.urls()
    assert set(urls) == set(LOGINS)
    for name, url in urls.items():
        assert DatabaseURL.parse(url).sslmode == "verify-full"
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT current_user, current_database(), s.ssl, s.version"
                " FROM pg_stat_ssl s WHERE s.pid = pg_backend_pid()"
            ).fetchone()
        assert row is not None
        if name == "admin":
            # The superuser comes in over the local socket only (pg_hba rejects it on TCP).
            assert row == (LOGINS[name], "chat", False, None)
            continue
        assert row[:3] == (LOGINS[name], "chat", True)
        assert row[3] in {"TLSv1.2", "TLSv1.3"}


def test_plaintext_tcp_is_rejected(sandbox: Sandbox) -> None:
    url = _with_query(sandbox.url_for("app"), sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match="no encryption"):
        psycopg.connect(url, connect_timeout=5)


def test_wrong_password_is_rejected(sandbox: Sandbox) -> None:
    url = DatabaseURL.parse(sandbox.url_for("app")).with_credentials("chatsec_app", "wrong")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url.libpq, connect_timeout=5)


def test_verify_full_checks_the_host_name(sandbox: Sandbox) -> None:
    url = sandbox.url_for("app")
    # Same server address, but libpq must check the certificate against another name.
    with pytest.raises(psycopg.OperationalError, match="does not match host name"):
        psycopg.connect(url, host="db.example.test", hostaddr="127.0.0.1", connect_timeout=5)
    # "localhost" is in the certificate, so the same trick with it succeeds.
    with psycopg.connect(url, host="localhost", hostaddr="127.0.0.1", connect_timeout=5):
        pass


def test_verify_full_rejects_an_untrusted_ca(sandbox: Sandbox, tmp_path: Path) -> None:
    other_ca = tmp_path / "other-ca.crt"
    other_ca.write_bytes(make_ca("not the sandbox CA").cert)
    url = _with_query(sandbox.url_for("app"), sslrootcert=str(other_ca))
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(url, connect_timeout=5)


def test_secret_files_are_private(sandbox: Sandbox) -> None:
    for path in (sandbox.secrets_file, sandbox.tls_dir / "ca.key", sandbox.tls_dir / "server.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    if IS_ROOT:
        assert sandbox.secrets_file.stat().st_uid == 0
        key_owner = (sandbox.tls_dir / "server.key").stat().st_uid
        assert key_owner == sandbox.data_dir.stat().st_uid != 0
        assert stat.S_IMODE(sandbox.directory.stat().st_mode) == 0o711


def test_server_settings(sandbox: Sandbox) -> None:
    with sandbox.admin_connect() as conn:
        settings = dict(
            conn.execute(
                "SELECT name, setting FROM pg_settings WHERE name = ANY(%s)",
                (
                    [
                        "ssl",
                        "listen_addresses",
                        "password_encryption",
                        "shared_preload_libraries",
                        "ssl_min_protocol_version",
                        "fsync",
                        "port",
                    ],
                ),
            ).fetchall()
        )
        hba_methods = {r[0] for r in conn.execute("SELECT auth_method FROM pg_hba_file_rules")}
    assert settings["ssl"] == "on"
    assert settings["listen_addresses"] == "127.0.0.1"
    assert settings["password_encryption"] == "scram-sha-256"
    assert settings["shared_preload_libraries"] in {"pg_stat_statements", "pg_stat_statements,pgaudit"}
    assert settings["ssl_min_protocol_version"] == "TLSv1.3"
    assert settings["fsync"] == "on"
    assert int(settings["port"]) == sandbox.port
    assert hba_methods == {"scram-sha-256", "reject"}


def test_roles_and_database_grants(sandbox: Sandbox) -> None:
    with sandbox.admin_connect() as conn:
        roles = {
            r[0]: r[1:]
            for r in conn.execute(
                "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls"
                " FROM pg_roles WHERE rolname LIKE 'chat%' OR rolname = 'app_user'"
            )
        }
        members = set(
            conn.execute(
                "SELECT g.rolname, m.rolname, am.admin_option FROM pg_auth_members am"
                " JOIN pg_roles g ON g.oid = am.roleid JOIN pg_roles m ON m.oid = am.member"
            ).fetchall()
        )
        owner, public_grants = conn.execute(
            "SELECT pg_get_userbyid(datdba),"
            " (SELECT count(*) FROM aclexplode(datacl) a WHERE a.grantee = 0)"
            " FROM pg_database WHERE datname = 'chat'"
        ).fetchone() or (None, None)
        can_connect = conn.execute(
            "SELECT has_database_privilege('chatsec_app', 'chat', 'CONNECT'),"
            " has_database_privilege('chatsec_auditor', 'chat', 'TEMPORARY')"
        ).fetchone()
    assert roles["app_user"] == (False, False, False, False, False)
    assert roles["chat_auditor"] == (False, False, False, False, False)
    assert roles["chatsec_migrator"] == (True, False, True, False, False)
    assert roles["chatsec_app"] == (True, False, False, False, False)
    assert roles["chatsec_auditor"] == (True, False, False, False, False)
    assert roles["chatsec_admin"][:2] == (True, True)
    assert ("app_user", "chatsec_app", False) in members
    assert ("chat_auditor", "chatsec_auditor", False) in members
    assert ("pg_monitor", "chatsec_migrator", True) in members
    assert ("pg_read_all_settings", "chatsec_migrator", True) in members
    assert owner == "chatsec_migrator"
    assert public_grants == 0
    assert can_connect == (True, True)


def test_passwords_never_reach_the_server_log(sandbox: Sandbox) -> None:
    passwords = [DatabaseURL.parse(u).password for u in sandbox.urls().values()]
    log = sandbox.log_file.read_text()
    for password in passwords:
        assert password and password not in log


def test_env_lines_export_all_urls(sandbox: Sandbox) -> None:
    urls = sandbox.urls()
    exported = {}
    for line in sandbox.env_lines().splitlines():
        keyword, assignment = shlex.split(line)
        assert keyword == "export"
        var, _, value = assignment.partition("=")
        exported[var] = value
    assert exported == {var: urls[name] for name, var in ENV_VARS.items()}


def test_create_and_drop_database(sandbox: Sandbox) -> None:
    url = sandbox.create_database("chatsec_scratch")
    try:
        assert DatabaseURL.parse(url).user == "chatsec_migrator"
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("chatsec_scratch",)
        # Members of app_user may connect (the grant), PUBLIC may not.
        with psycopg.connect(sandbox.url_for("app", "chatsec_scratch")):
            pass
        with sandbox.admin_connect("chatsec_scratch") as conn:
            row = conn.execute(
                "SELECT count(*) FROM pg_database d, aclexplode(d.datacl) a"
                " WHERE d.datname = current_database() AND a.grantee = 0"
            ).fetchone()
        assert row == (0,)
    finally:
        sandbox.drop_database("chatsec_scratch")
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(url, connect_timeout=5)


def test_unknown_login_is_a_clear_error(sandbox: Sandbox) -> None:
    with pytest.raises(ChatsecError, match="unknown sandbox login"):
        sandbox.url_for("nobody")


def test_start_twice_is_harmless(sandbox: Sandbox) -> None:
    before = sandbox.status()
    sandbox.start()
    after = sandbox.status()
    assert after == before
    assert after.running and after.pid is not None


def test_restart_after_crash_with_stale_pid_file(sandbox: Sandbox) -> None:
    pid = sandbox.status().pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (sandbox.data_dir / "postmaster.pid").exists()
    assert not sandbox.status().running
    sandbox.start()
    status = sandbox.status()
    assert status.running and status.pid not in {None, pid}
    with psycopg.connect(sandbox.url_for("app")) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_stop_then_restart_on_a_new_port_when_the_old_one_is_taken(sandbox: Sandbox) -> None:
    old_port = sandbox.port
    sandbox.stop()
    assert _processes_using(sandbox.data_dir) == []
    assert not sandbox.status().running
    sandbox.stop()  # stopping a stopped sandbox is a no-op
    with pytest.raises(ChatsecError, match="is not running: chatsec sandbox start --dir"):
        sandbox.urls()
    with socket.socket() as squatter:
        # The server's own closes (rejected logins) leave TIME_WAIT sockets on the old
        # port; SO_REUSEADDR binds past them, and a live listener is what we test.
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", old_port))
        squatter.listen()
        sandbox.start()
        assert sandbox.port != old_port
    with psycopg.connect(sandbox.url_for("migrator")) as conn:
        assert conn.execute("SELECT current_user").fetchone() == ("chatsec_migrator",)


def test_urls_of_a_never_started_sandbox_fail_clearly() -> None:
    directory = _fresh_dir()
    try:
        with pytest.raises(ChatsecError, match=f"sandbox at {directory} is not running"):
            Sandbox(directory).urls()
        assert not Sandbox(directory).status().running
    finally:
        shutil.rmtree(directory)


@pytest.mark.skipif(not IS_ROOT, reason="the ancestor check applies only when root")
def test_untraversable_ancestor_is_reported() -> None:
    private = _fresh_dir()  # mkdtemp makes it 0700: the postgres user cannot pass through
    try:
        with pytest.raises(ChatsecError, match=f"{private} is not searchable"):
            Sandbox(private / "inner" / "sandbox").start()
    finally:
        shutil.rmtree(private)


def test_wal_archiving_copies_segments() -> None:
    sb = Sandbox(_fresh_dir())
    try:
        sb.start(archive=True)
        assert sb.status().archive
        with sb.admin_connect() as conn:
            assert conn.execute("SHOW archive_mode").fetchone() == ("on",)
            conn.execute("CREATE TABLE t AS SELECT 1 AS x")
            segment = conn.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert segment is not None
        deadline = time.monotonic() + 20
        while not (sb.archive_dir / segment[0]).exists():
            assert time.monotonic() < deadline, "WAL segment was not archived"
            time.sleep(0.1)
        sb.stop()
        sb.start()  # archiving is remembered across restarts
        assert sb.status().archive
    finally:
        sb.stop()
        shutil.rmtree(sb.directory, ignore_errors=True)
