"""A throwaway local PostgreSQL cluster reachable only over verified TLS with SCRAM passwords."""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.ops.harden import close_large_objects
from chatsec.sandbox.binaries import child_env, find_bindir
from chatsec.tls.certs import make_ca, make_server_cert

HOST = "127.0.0.1"
DEFAULT_DATABASE = "chat"
SERVER_OS_USER = "postgres"
# Short names (as in urls()) for the login roles the sandbox creates.
LOGINS = {
    "admin": "chatsec_admin",
    "migrator": "chatsec_migrator",
    "app": "chatsec_app",
    "auditor": "chatsec_auditor",
}
ENV_VARS = {
    "migrator": "CHATSEC_DATABASE_URL",
    "app": "CHATSEC_APP_DATABASE_URL",
    "auditor": "CHATSEC_AUDIT_DATABASE_URL",
    "admin": "CHATSEC_ADMIN_DATABASE_URL",
}
# The demo's keyrings, beside the cluster (sandbox data only: real keyrings live elsewhere).
KEYRING_FILE = "keyring.json"
IDENTITY_KEYRING_FILE = "identity-keyring.json"
KEYRING_ENV_VARS = {
    "CHATSEC_KEYRING": KEYRING_FILE,
    "CHATSEC_IDENTITY_KEYRING": IDENTITY_KEYRING_FILE,
}
GROUP_ROLES = ("app_user", "chat_auditor")
# Database privileges as policies/schemas.toml declares them: the application may only
# connect (no TEMPORARY: no object of its own may outlive a request); the auditor keeps
# TEMPORARY for the plan's policy normalization.
DATABASE_GRANTS = {"app_user": "CONNECT", "chat_auditor": "CONNECT, TEMPORARY"}
_GROUP_ATTRS = "NOLOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS"
# login role -> (attributes, group role it belongs to)
_LOGIN_ROLES: dict[str, tuple[str, str | None]] = {
    "chatsec_migrator": ("LOGIN CREATEROLE", None),
    "chatsec_app": ("LOGIN", "app_user"),
    "chatsec_auditor": ("LOGIN", "chat_auditor"),
}
PG_HBA = """\
# Managed by chatsec sandbox: SCRAM everywhere, TCP only over TLS, never trust.
# The superuser only through the socket in run/ (0700): no other OS user can even try it.
local     all all                scram-sha-256
host      all chatsec_admin 0.0.0.0/0 reject
host      all chatsec_admin ::/0      reject
hostssl   all all 127.0.0.1/32   scram-sha-256
hostssl   all all ::1/128        scram-sha-256
hostnossl all all 0.0.0.0/0      reject
hostnossl all all ::/0           reject
"""
# "all" does not match replication connections: pg_basebackup needs its own line. Only
# sandboxes started with --archive (the PITR drill) open it, and only to the admin, whose
# connections go through the socket like all of its others.
_HBA_REPLICATION = "local     replication chatsec_admin  scram-sha-256\n"
# Statistics for `chatsec doctor`; the library itself is preloaded by _write_config.
_STAT_STATEMENTS = "CREATE EXTENSION IF NOT EXISTS pg_stat_statements WITH SCHEMA public"
_INCLUDE_LINE = "include_if_exists = 'chatsec.conf'"
# sockaddr_un.sun_path holds 108 bytes including the trailing NUL.
_MAX_SOCKET_PATH = 107
_PG_CTL_TIMEOUT_S = 60
_EXIT_WAIT_S = 15.0


@dataclass(frozen=True)
class SandboxStatus:
    """What `Sandbox.status()` reports."""

    running: bool
    pid: int | None
    port: int | None
    directory: Path
    archive: bool


@dataclass
class _State:
    """secrets.json: the login passwords and settings that must survive restarts."""

    port: int
    archive: bool = False
    bootstrapped: bool = False
    passwords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Any, path: Path) -> _State:
        try:
            passwords = {str(k): str(v) for k, v in dict(raw["passwords"]).items()}
            return cls(int(raw["port"]), bool(raw["archive"]), bool(raw["bootstrapped"]), passwords)
        except (KeyError, TypeError, ValueError) as exc:
            raise ChatsecError(f"corrupt sandbox state file {path}: {exc!r}") from None


def _conf_str(value: str) -> str:
    """A postgresql.conf string literal."""
    return "'" + value.replace("'", "''") + "'"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Postgres also binds with SO_REUSEADDR, so only a live listener counts as taken.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _one_line(text: str, last: int = 5) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return " | ".join(lines[-last:])


class Sandbox:
    """A PostgreSQL cluster in `directory`: data/, tls/, run/, log/, archive/, secrets.json."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory).expanduser().resolve()
        self._bindir: Path | None = None

    # -- layout -----------------------------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    @property
    def tls_dir(self) -> Path:
        return self.directory / "tls"

    @property
    def run_dir(self) -> Path:
        return self.directory / "run"

    @property
    def log_file(self) -> Path:
        return self.directory / "log" / "postgres.log"

    @property
    def archive_dir(self) -> Path:
        return self.directory / "archive"

    @property
    def secrets_file(self) -> Path:
        return self.directory / "secrets.json"

    @property
    def ca_cert_path(self) -> Path:
        return self.tls_dir / "ca.crt"

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def port(self) -> int:
        return self._require_state().port

    @property
    def _initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    @property
    def _as_root(self) -> bool:
        return os.geteuid() == 0

    # -- public API -------------------------------------------------------------------------

    def start(self, archive: bool = False) -> None:
        """Create (first time) and start the cluster; a no-op when it already runs.

        archive=True turns on WAL archiving into archive/ and is remembered; archive=False
        keeps whatever an earlier start chose.
        """
        state = self._load_state()
        if self._running():
            if state is None:
                raise ChatsecError(
                    f"a server runs on {self.data_dir} but {self.secrets_file} is missing: "
                    f"stop it and remove {self.directory}"
                )
            if archive and not state.archive:
                raise ChatsecError(
                    f"sandbox at {self.directory} runs without WAL archiving: "
                    f"stop it first, then start it with archiving"
                )
            if not state.bootstrapped:
                self._bootstrap(state)
            return

        if state is None:
            self._refuse_foreign_directory()
        self._prepare_layout()
        if state is None:
            state = _State(
                port=_free_port(),
                passwords={role: secrets.token_urlsafe(24) for role in LOGINS.values()},
            )
        elif not _port_free(state.port):
            # Something else took our port while we were stopped: move rather than fail.
            state.port = _free_port()
        state.archive = state.archive or archive
        self._check_socket_path(state.port)
        self._save_state(state)
        self._ensure_tls()
        if not self._initialised:
            self._initdb(state.passwords[LOGINS["admin"]])
        self._write_config(state)
        self._clear_stale_pid()
        self._pg_ctl_start()
        if not state.bootstrapped:
            self._bootstrap(state)

    def exists(self) -> bool:
        """Whether a sandbox was ever created here (its secrets file or its data directory)."""
        return self.secrets_file.is_file() or (self.data_dir / "PG_VERSION").is_file()

    def _refuse_foreign_directory(self) -> None:
        """A new sandbox goes into a missing or empty directory, never over someone's files."""
        if self.exists() or not self.directory.exists():
            return
        if not self.directory.is_dir():
            raise ChatsecError(f"{self.directory} is not a directory: choose another --dir")
        if any(self.directory.iterdir()):
            raise ChatsecError(
                f"{self.directory} is not empty and holds no chatsec sandbox: nothing was "
                "changed; choose a new or empty --dir"
            )

    def stop(self) -> None:
        """Fast shutdown; returns once no server process for data/ remains."""
        if not self.exists():
            raise ChatsecError(f"no sandbox at {self.directory}: nothing to stop")
        if not self._running():
            return
        res = self._run_server_cmd(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-m",
                "fast",
                "-w",
                "-t",
                str(_PG_CTL_TIMEOUT_S),
                "stop",
            ]
        )
        if res.returncode != 0 and self._running():
            raise ChatsecError(
                f"pg_ctl stop failed for {self.data_dir}: {_one_line(res.stderr + res.stdout)}"
            )
        self._wait_for_exit()

    def status(self) -> SandboxStatus:
        state = self._load_state()
        running = self._running()
        return SandboxStatus(
            running=running,
            pid=self._postmaster_pid() if running else None,
            port=state.port if state else None,
            directory=self.directory,
            archive=state.archive if state else False,
        )

    def url_for(self, login: str, database: str = DEFAULT_DATABASE) -> str:
        """A verify-full libpq URL for `login` ("app" or "chatsec_app", etc.) and `database`."""
        state = self._require_state()
        role = LOGINS.get(login, login)
        if role not in state.passwords:
            raise ChatsecError(
                f"unknown sandbox login {login!r} (expected one of {', '.join(LOGINS)})"
            )
        query = {"sslmode": "verify-full", "sslrootcert": str(self.ca_cert_path)}
        if role == LOGINS["admin"]:
            # PG_HBA lets the superuser in through the Unix socket only. libpq takes a `host`
            # query parameter over the URL's host (and ignores sslmode on a socket); the URL
            # still names the server's TCP address, so "same server" comparisons hold.
            query["host"] = str(self.run_dir)
        url = DatabaseURL(role, state.passwords[role], HOST, state.port, database, query)
        return url.libpq

    def urls(self) -> dict[str, str]:
        """migrator/app/auditor/admin -> URL for the `chat` database."""
        self._require_running()
        return {name: self.url_for(name) for name in LOGINS}

    def env_lines(self) -> str:
        """Shell `export` lines for the four URLs, for eval "$(chatsec sandbox env)", and
        for the keyrings `chatsec demo` keeps in the sandbox directory, once they exist."""
        urls = self.urls()
        lines = [f"export {var}={shlex.quote(urls[name])}\n" for name, var in ENV_VARS.items()]
        for var, file in KEYRING_ENV_VARS.items():
            if (self.directory / file).is_file():
                lines.append(f"export {var}={shlex.quote(str(self.directory / file))}\n")
        return "".join(lines)

    def admin_connect(self, database: str = DEFAULT_DATABASE) -> psycopg.Connection[Any]:
        """An autocommit superuser connection over verified TLS."""
        url = DatabaseURL.parse(self.url_for("admin", database))
        return connect(url, autocommit=True, application_name="chatsec sandbox")

    def create_database(
        self, name: str, owner: str = LOGINS["migrator"], template: str | None = None
    ) -> str:
        """Create `name` (from `template`) locked down like `chat`; returns the migrator URL."""
        with self.admin_connect() as conn:
            if template is None:
                self._execute(conn, sql.SQL("CREATE DATABASE {} OWNER {}"), name, owner)
            else:
                self._execute(
                    conn, sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}"), name, template, owner
                )
            self._lock_down_database(conn, name)
        with self.admin_connect(name) as conn:
            close_large_objects(conn)
        return self.url_for("migrator", name)

    def drop_database(self, name: str) -> None:
        with self.admin_connect() as conn:
            self._execute(conn, sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)"), name)

    def base_backup(self, output: Path) -> Path:
        """pg_basebackup into the new directory `output` (plain format, no WAL: the archive has it).

        Plain format so a recovery only copies the directory; -X none because a sandbox
        that may be recovered archives every segment anyway (start --archive is required).
        """
        state = self._require_state()
        self._require_running()
        if not state.archive:
            raise ChatsecError(
                f"sandbox at {self.directory} runs without WAL archiving, so a base backup could "
                f"not be rolled forward: chatsec sandbox stop, then chatsec sandbox start --archive"
            )
        output = Path(output).expanduser().resolve()
        if output.exists():
            raise ChatsecError(f"{output} already exists: a base backup goes into a new directory")
        output.mkdir(parents=True)
        output.chmod(0o700)
        self._chown_server(output)
        conninfo = (
            f"host={self.run_dir} port={state.port} user={LOGINS['admin']} dbname=replication "
            f"sslmode=verify-full sslrootcert={self.ca_cert_path}"
        )
        cmd = [str(self.bindir / "pg_basebackup"), "-D", str(output), "-F", "p", "-X", "none"]
        cmd += ["-c", "fast", "--no-password", "-d", conninfo]
        # The password travels in the child's environment, never in argv (visible in ps).
        res = self._run_server_cmd(
            cmd, timeout=600, extra_env={"PGPASSWORD": state.passwords[LOGINS["admin"]]}
        )
        if res.returncode != 0:
            shutil.rmtree(output, ignore_errors=True)
            hint = ""
            if "pg_hba.conf" in res.stderr:
                hint = " (restart the sandbox so pg_hba.conf gets its replication line)"
            raise ChatsecError(
                f"pg_basebackup failed for {self.directory}: {_one_line(res.stderr, 2)}{hint}"
            )
        return output

    def recover_from(self, base: Path, source: Sandbox, settings: dict[str, str]) -> None:
        """Create this sandbox from the base backup `base`, replaying `source`'s WAL archive.

        `settings` are the recovery settings (target, action) for this first start only;
        restore_command is set here. TLS files and passwords are copied from `source` so
        its logins and CA work unchanged; only the port differs. Returns once pg_ctl
        reports the server started (it may still be replaying).
        """
        if self._initialised or self.secrets_file.exists():
            raise ChatsecError(
                f"{self.directory} already holds a sandbox: recover into a new directory"
            )
        base = Path(base).expanduser().resolve()
        if not (base / "PG_VERSION").is_file() or not (base / "backup_label").is_file():
            raise ChatsecError(
                f"{base} is not a plain-format base backup (no PG_VERSION or backup_label): "
                f"make one with chatsec sandbox basebackup"
            )
        source_state = source._require_state()
        if not source.archive_dir.is_dir() or not any(source.archive_dir.iterdir()):
            raise ChatsecError(
                f"{source.archive_dir} holds no archived WAL: the source must run with --archive"
            )
        self._prepare_layout()
        state = _State(port=_free_port(), bootstrapped=True, passwords=dict(source_state.passwords))
        self._check_socket_path(state.port)
        for name, mode, server_owned in (
            ("ca.key", 0o600, False),
            ("ca.crt", 0o644, False),
            ("server.crt", 0o644, False),
            ("server.key", 0o600, True),
        ):
            data = (source.tls_dir / name).read_bytes()
            self._write_file(self.tls_dir / name, data, mode, server_owned)
        # Copied as the server user, so every file keeps the owner and modes postgres wants.
        res = self._run_server_cmd(["cp", "-a", f"{base}/.", f"{self.data_dir}/"], timeout=600)
        if res.returncode != 0:
            raise ChatsecError(f"cannot copy {base} to {self.data_dir}: {_one_line(res.stderr)}")
        archive = shlex.quote(str(source.archive_dir))
        recovery = {"restore_command": _conf_str(f"cp {archive}/%f %p"), **settings}
        self._save_state(state)
        self._write_config(state, extra=recovery)
        self._write_file(self.data_dir / "recovery.signal", b"", 0o600, server_owned=True)
        self._pg_ctl_start()

    def server_pids(self) -> list[int]:
        """Processes of this cluster: every postgres process has data/ as its working directory."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if Path(os.readlink(entry / "cwd")) == self.data_dir:
                    pids.append(int(entry.name))
            except OSError:
                continue  # exited meanwhile, or not ours to inspect
        return pids

    # -- state ------------------------------------------------------------------------------

    def _load_state(self) -> _State | None:
        try:
            raw = json.loads(self.secrets_file.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ChatsecError(f"cannot read sandbox state {self.secrets_file}: {exc}") from None
        return _State.from_json(raw, self.secrets_file)

    def _save_state(self, state: _State) -> None:
        payload = json.dumps(
            {
                "port": state.port,
                "archive": state.archive,
                "bootstrapped": state.bootstrapped,
                "passwords": state.passwords,
            },
            indent=2,
        )
        # Write-then-rename so a crash never leaves half a file; 0600 from creation on.
        tmp = self.secrets_file.with_suffix(".json.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(payload + "\n")
        os.replace(tmp, self.secrets_file)

    def _require_state(self) -> _State:
        state = self._load_state()
        if state is None or not self._initialised:
            raise self._not_running_error()
        return state

    def _require_running(self) -> None:
        if not self._initialised or not self._running():
            raise self._not_running_error()

    def _not_running_error(self) -> ChatsecError:
        where = shlex.quote(str(self.directory))
        return ChatsecError(
            f"sandbox at {self.directory} is not running: chatsec sandbox start --dir {where}"
        )

    # -- processes --------------------------------------------------------------------------

    def _server_user(self) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(SERVER_OS_USER)
        except KeyError:
            raise ChatsecError(
                f"running as root but OS user {SERVER_OS_USER!r} does not exist "
                f"(PostgreSQL refuses to run as root): apt-get install postgresql"
            ) from None

    def _chown_server(self, path: Path) -> None:
        if self._as_root:
            user = self._server_user()
            os.chown(path, user.pw_uid, user.pw_gid)

    def _run_server_cmd(
        self,
        cmd: Sequence[str],
        timeout: float = _PG_CTL_TIMEOUT_S + 30,
        extra_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a server binary, as `postgres` when we are root (PostgreSQL refuses root)."""
        # PG* variables (PGDATA, PGPORT, ...) would silently redirect pg_ctl and initdb,
        # and the server must not inherit chatsec's secrets (CHATSEC_*).
        env = child_env(extra_env)
        kwargs: dict[str, Any] = {}
        if self._as_root:
            user = self._server_user()
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
            env["HOME"] = user.pw_dir
            env["USER"] = env["LOGNAME"] = user.pw_name
        try:
            return subprocess.run(
                list(cmd),
                capture_output=True,
                text=True,
                env=env,
                cwd=self.directory,
                timeout=timeout,
                check=False,
                **kwargs,
            )
        except subprocess.TimeoutExpired:
            raise ChatsecError(
                f"{Path(cmd[0]).name} timed out after {timeout:.0f}s; server log: "
                f"{self._log_tail()}"
            ) from None
        except OSError as exc:
            raise ChatsecError(f"cannot run {cmd[0]}: {exc}") from None

    def _running(self) -> bool:
        if not self._initialised:
            return False
        res = self._run_server_cmd(
            [str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "status"]
        )
        # 0: running; 3: not running; 4: no usable data directory.
        return res.returncode == 0

    def _postmaster_pid(self) -> int | None:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def _wait_for_exit(self) -> None:
        deadline = time.monotonic() + _EXIT_WAIT_S
        while pids := self.server_pids():
            if time.monotonic() > deadline:
                raise ChatsecError(
                    f"server processes for {self.data_dir} still alive after "
                    f"{_EXIT_WAIT_S:.0f}s: pids {' '.join(map(str, pids))}"
                )
            time.sleep(0.1)

    def _clear_stale_pid(self) -> None:
        pidfile = self.data_dir / "postmaster.pid"
        if not pidfile.exists():
            return
        # After a crash (kill -9 of the postmaster) its children exit on their own; they must be
        # gone first or the new postmaster finds the old shared memory still attached.
        self._wait_for_exit()
        pidfile.unlink(missing_ok=True)

    def _log_tail(self) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return _one_line(text) or "(server log empty)"

    # -- first start ------------------------------------------------------------------------

    def _prepare_layout(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._as_root:
            self._check_ancestors()
            # postgres must traverse DIR to reach data/, run/, tls/ but not list it.
            self.directory.chmod(0o711)
        for sub, server_owned in (
            (self.data_dir, True),
            (self.run_dir, True),
            (self.log_file.parent, True),
            (self.archive_dir, True),
            (self.tls_dir, False),
        ):
            sub.mkdir(exist_ok=True)
            if server_owned:
                sub.chmod(0o700)
                self._chown_server(sub)
            else:
                sub.chmod(0o755)

    def _check_ancestors(self) -> None:
        for parent in self.directory.parents:
            if not parent.stat().st_mode & 0o001:
                raise ChatsecError(
                    f"{parent} is not searchable by other users, so the {SERVER_OS_USER} server "
                    f"user cannot reach {self.directory}: use --dir /var/tmp/chatsec "
                    f"(or chmod o+x {parent})"
                )

    def _check_socket_path(self, port: int) -> None:
        socket_path = f"{self.run_dir}/.s.PGSQL.{port}.lock"
        if len(socket_path.encode()) > _MAX_SOCKET_PATH:
            raise ChatsecError(
                f"sandbox directory {self.directory} is too long for a Unix socket path "
                f"({len(socket_path)} > {_MAX_SOCKET_PATH} bytes): use --dir /var/tmp/chatsec"
            )

    def _write_file(self, path: Path, data: bytes, mode: int, server_owned: bool) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fh.fileno(), mode)  # O_CREAT's mode does not apply to an existing file
            fh.write(data)
        if server_owned:
            self._chown_server(path)

    def _ensure_tls(self) -> None:
        ca_key = self.tls_dir / "ca.key"
        server_crt, server_key = self.tls_dir / "server.crt", self.tls_dir / "server.key"
        if not all(p.is_file() for p in (self.ca_cert_path, ca_key, server_crt, server_key)):
            ca = make_ca()
            server = make_server_cert(ca)
            # The CA key stays with whoever runs chatsec; the server never needs it.
            self._write_file(ca_key, ca.key, 0o600, server_owned=False)
            self._write_file(self.ca_cert_path, ca.cert, 0o644, server_owned=False)
            self._write_file(server_crt, server.cert, 0o644, server_owned=False)
            self._write_file(server_key, server.key, 0o600, server_owned=True)
        else:
            # PostgreSQL refuses a key file readable by others or owned by someone else.
            server_key.chmod(0o600)
            self._chown_server(server_key)

    def _initdb(self, admin_password: str) -> None:
        fd, pwname = tempfile.mkstemp(prefix=".pwfile-", dir=self.directory)
        pwfile = Path(pwname)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(admin_password + "\n")
            self._chown_server(pwfile)  # mkstemp made it 0600; initdb reads it as postgres
            res = self._run_server_cmd(
                [
                    str(self.bindir / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    LOGINS["admin"],
                    f"--pwfile={pwfile}",
                    "--auth-local=scram-sha-256",
                    "--auth-host=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ],
                timeout=300,
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if res.returncode != 0:
            raise ChatsecError(
                f"initdb failed for {self.data_dir}: {_one_line(res.stderr + res.stdout)}"
            )

    def _write_config(self, state: _State, extra: dict[str, str] | None = None) -> None:
        tls = self.tls_dir
        settings = {
            "listen_addresses": _conf_str(HOST),
            "port": str(state.port),
            "unix_socket_directories": _conf_str(str(self.run_dir)),
            "ssl": "on",
            "ssl_cert_file": _conf_str(str(tls / "server.crt")),
            "ssl_key_file": _conf_str(str(tls / "server.key")),
            "ssl_ca_file": _conf_str(str(self.ca_cert_path)),
            "ssl_min_protocol_version": _conf_str("TLSv1.3"),
            # TLS 1.2 suites only (1.3 ignores it): AEAD with ECDHE, so lowering the minimum
            # later does not bring back PostgreSQL's default CBC, CAMELLIA and CCM_8 suites.
            "ssl_ciphers": _conf_str("ECDHE+AESGCM:ECDHE+CHACHA20"),
            "ssl_prefer_server_ciphers": "on",
            "password_encryption": _conf_str("scram-sha-256"),
            "shared_preload_libraries": _conf_str(",".join(self._preload_libraries())),
            "max_connections": "100",
            # pg_ctl -l captures the log; the collector would write elsewhere.
            "logging_collector": "off",
            # Forensics: every session's start and end, and who ran each logged line where.
            "log_connections": "on",
            "log_disconnections": "on",
            "log_line_prefix": _conf_str("%m [%p] %q%u@%d "),
        }
        if "pgaudit" in self._preload_libraries():
            # Every DDL and role/privilege change, statement text only (no parameters).
            settings["pgaudit.log"] = _conf_str("ddl, role")
        if state.archive:
            target = shlex.quote(str(self.archive_dir))
            settings |= {
                "wal_level": "replica",
                "archive_mode": "on",
                # Refuse to overwrite: an existing segment means the archive is shared or reused.
                "archive_command": _conf_str(f"test ! -f {target}/%f && cp %p {target}/%f"),
            }
        settings |= extra or {}
        conf = "# Managed by chatsec sandbox; rewritten on every start.\n" + "".join(
            f"{key} = {value}\n" for key, value in settings.items()
        )
        self._write_file(self.data_dir / "chatsec.conf", conf.encode(), 0o600, server_owned=True)
        hba = PG_HBA + (_HBA_REPLICATION if state.archive else "")
        self._write_file(self.data_dir / "pg_hba.conf", hba.encode(), 0o600, server_owned=True)
        main_conf = self.data_dir / "postgresql.conf"
        if _INCLUDE_LINE not in main_conf.read_text().splitlines():
            # Appending keeps initdb's file (and its ownership); our settings come last and win.
            with main_conf.open("a") as fh:
                fh.write(f"\n{_INCLUDE_LINE}\n")

    def _preload_libraries(self) -> list[str]:
        """pg_stat_statements (contrib), and pgaudit where it is installed."""
        # A preload library that is missing stops the server from starting: only name
        # pgaudit (apt-get install postgresql-15-pgaudit) when its module is there.
        return ["pg_stat_statements"] + (["pgaudit"] if self._has_library("pgaudit") else [])

    def _has_library(self, name: str) -> bool:
        """Whether the server's library directory (pg_config --pkglibdir) has `name`.so."""
        libdir = self.bindir.parent / "lib"
        pg_config = self.bindir / "pg_config"
        if pg_config.is_file():
            res = subprocess.run(
                [str(pg_config), "--pkglibdir"],
                capture_output=True,
                text=True,
                check=False,
                timeout=10,
            )
            if res.returncode == 0 and res.stdout.strip():
                libdir = Path(res.stdout.strip())
        return (libdir / f"{name}.so").is_file()

    def _pg_ctl_start(self) -> None:
        res = self._run_server_cmd(
            [
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(_PG_CTL_TIMEOUT_S),
                "start",
            ]
        )
        if res.returncode != 0:
            raise ChatsecError(
                f"pg_ctl start failed for {self.data_dir} (exit {res.returncode}); "
                f"server log: {self._log_tail()}"
            )

    # -- roles and database -----------------------------------------------------------------

    @staticmethod
    def _execute(conn: psycopg.Connection[Any], query: sql.SQL, *names: str) -> None:
        statement = query.format(*(sql.Identifier(n) for n in names))
        try:
            conn.execute(statement)
        except psycopg.Error as exc:
            raise ChatsecError(
                f"sandbox SQL failed ({statement.as_string(conn)}): {_one_line(str(exc), 1)}"
            ) from None

    def _lock_down_database(self, conn: psycopg.Connection[Any], name: str) -> None:
        self._execute(conn, sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC"), name)
        for role, privileges in DATABASE_GRANTS.items():
            self._execute(conn, sql.SQL(f"GRANT {privileges} ON DATABASE {{}} TO {{}}"), name, role)

    def _bootstrap(self, state: _State) -> None:
        """Roles, memberships and the `chat` database; safe to repeat."""
        with self.admin_connect("postgres") as conn:
            existing = {row[0] for row in conn.execute("SELECT rolname FROM pg_roles").fetchall()}
            for group in GROUP_ROLES:
                verb = "ALTER" if group in existing else "CREATE"
                self._execute(conn, sql.SQL(f"{verb} ROLE {{}} {_GROUP_ATTRS}"), group)
            for role, (attrs, member_of) in _LOGIN_ROLES.items():
                # Send a SCRAM verifier, never the password: statements can reach the server log.
                verifier = conn.pgconn.encrypt_password(
                    state.passwords[role].encode(), role.encode(), b"scram-sha-256"
                ).decode()
                verb = "ALTER" if role in existing else "CREATE"
                query = sql.SQL(f"{verb} ROLE {{}} {attrs} PASSWORD {{}}").format(
                    sql.Identifier(role), sql.Literal(verifier)
                )
                try:
                    conn.execute(query)
                except psycopg.Error as exc:
                    raise ChatsecError(
                        f"sandbox could not set up role {role}: {_one_line(str(exc), 1)}"
                    ) from None
                if member_of:
                    self._execute(conn, sql.SQL("GRANT {} TO {}"), member_of, role)
            self._execute(
                conn,
                sql.SQL("GRANT pg_monitor, pg_read_all_settings TO {} WITH ADMIN OPTION"),
                LOGINS["migrator"],
            )
            has_db = conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (DEFAULT_DATABASE,)
            ).fetchone()
            if not has_db:
                self._execute(
                    conn,
                    sql.SQL("CREATE DATABASE {} OWNER {}"),
                    DEFAULT_DATABASE,
                    LOGINS["migrator"],
                )
            self._lock_down_database(conn, DEFAULT_DATABASE)
        # pg_hba.conf is readable over SQL only by superusers by default; the audit's
        # hba-rules check needs it (it reads rules, never changes them). Catalog ACLs are
        # per database: template1 passes the grant on to every database created later.
        for database in ("template1", DEFAULT_DATABASE):
            with self.admin_connect(database) as conn:
                conn.execute("GRANT SELECT ON pg_catalog.pg_hba_file_rules TO chat_auditor")
                conn.execute(
                    "GRANT EXECUTE ON FUNCTION pg_catalog.pg_hba_file_rules() TO chat_auditor"
                )
        # pg_stat_statements for `chatsec doctor` (creating it needs a superuser; the auditor
        # reads it through pg_monitor), and the large-object functions closed to PUBLIC
        # (chatsec harden-database). template1 hands both on to every later database.
        for database in ("template1", DEFAULT_DATABASE):
            with self.admin_connect(database) as conn:
                close_large_objects(conn)
                try:
                    conn.execute(_STAT_STATEMENTS)
                except psycopg.Error as exc:
                    raise ChatsecError(
                        f"sandbox could not create pg_stat_statements in {database}: "
                        f"{_one_line(str(exc), 1)} (apt-get install postgresql-contrib)"
                    ) from None
        state.bootstrapped = True
        self._save_state(state)
