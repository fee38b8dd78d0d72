"""Logical backups that keep the encryption promise, verified before they count, and restores.

A backup is `pg_dump --format=custom`, written to a private temporary file and renamed
to its name only after the dump was read back in full (pg_restore) and found to hold
no plaintext message and no key material. The keys live in the keyring, never in the
database, so a backup without its keyring is unreadable by design (docs/operations.md).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from chatsec.db.connect import connect, require_verified_tls
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Keyring
from chatsec.sandbox.binaries import find_bindir

MESSAGES = "chat.messages"
TIMEOUT_S = 3600
# pgcrypto's armor(): header lines (our Chatsec-Key), a blank line, base64, a CRC line.
ARMOR = re.compile(
    r"-----BEGIN PGP MESSAGE-----\n(?:[A-Za-z0-9-]+: [^\n]*\n)*\n"
    r"(?:[A-Za-z0-9+/]+=*\n)+=[A-Za-z0-9+/]{4}\n-----END PGP MESSAGE-----\n?"
)
# The keyring's key format is 64 hex digits; in schema text (function bodies, SET
# clauses, defaults) such a value has no business being there. Row data is not scanned
# for this shape: chat.encryption_keys.verifier is an HMAC of exactly that shape.
KEY_SHAPED = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
# A key setting given a literal value (SET app.encryption_key = '...', ALTER ... SET,
# set_config('app.encryption_key', '...')): reading it with current_setting() is fine.
KEY_SETTING_ASSIGNED = re.compile(
    r"SET\s+\"?app\.(encryption_key|decryption_keys)\"?\s*(=|TO)"
    r"|set_config\(\s*'app\.(encryption_key|decryption_keys)'\s*,\s*'",
    re.IGNORECASE,
)
_COPY_START = re.compile(r"^COPY (\S+) \((.*)\) FROM stdin;$")
_COPY_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{1,2}|[0-7]{1,3}|.)")
_COPY_CHARS = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


@dataclass(frozen=True)
class DumpScan:
    """What verifying a dump found; `problems` empty means it keeps the promise."""

    toc_entries: int
    messages: int
    tables: list[str]
    problems: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size_bytes: int
    scan: DumpScan


@dataclass
class RestoreReport:
    target: str
    current: tuple[str, ...]
    heads: tuple[str, ...]
    audit_passed: int = 0
    audit_failed: list[str] = field(default_factory=list)
    audit_skipped: list[str] = field(default_factory=list)
    audit_warnings: int = 0
    messages: int = 0
    decrypted: int | None = None  # None: not checked (no keyring)

    @property
    def at_head(self) -> bool:
        return bool(self.current) and set(self.current) == set(self.heads)

    @property
    def ok(self) -> bool:
        # Fail closed: messages that were never decrypted do not count as restored.
        decrypts = self.decrypted == self.messages or (self.decrypted is None and not self.messages)
        return self.at_head and not self.audit_failed and decrypts


# -- running the client tools -------------------------------------------------------------


def _tool(name: str) -> str:
    # The sandbox's finder prefers the newest server install; pg_dump must not be older
    # than the server it dumps.
    return str(find_bindir() / name)


def _libpq(url: DatabaseURL) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and an environment that carries it (never argv)."""
    require_verified_tls(url)
    # PG* variables (PGHOST, PGSERVICE, ...) could silently redirect the tools.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env["PGCONNECT_TIMEOUT"] = "10"
    if url.password is not None:
        env["PGPASSWORD"] = url.password
    return url.with_credentials(url.user or "", None).libpq, env


def _run(cmd: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ChatsecError(f"cannot run {Path(cmd[0]).name}: {exc}") from None


def _first_error(stderr: str) -> str:
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[0]


# -- verifying a dump ---------------------------------------------------------------------


def copy_unescape(value: str) -> str:
    """One field of COPY's text format, unescaped (\\n, \\t, \\\\, octal, hex)."""

    def one(match: re.Match[str]) -> str:
        seq = match.group(1)
        if seq[0] == "x" and len(seq) > 1:
            return chr(int(seq[1:], 16))
        if seq[0] in "01234567":
            return chr(int(seq, 8))
        return _COPY_CHARS.get(seq, seq)

    return _COPY_ESCAPE.sub(one, value)


def _script_lines(path: Path) -> Iterator[str]:
    """The dump as the SQL script pg_restore would run, line by line, without a database."""
    cmd = [_tool("pg_restore"), "--file=-", str(path)]
    try:
        proc = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace"
        )
    except OSError as exc:
        raise ChatsecError(f"cannot run pg_restore: {exc}") from None
    assert proc.stdout is not None and proc.stderr is not None
    with proc:
        for line in proc.stdout:
            yield line.rstrip("\n")
        stderr = proc.stderr.read()
    if proc.returncode != 0:
        raise ChatsecError(f"{path} does not read back with pg_restore: {_first_error(stderr)}")


def verify_dump(path: Path, keyring: Keyring | None = None) -> DumpScan:
    """Read a custom-format dump back in full and look for plaintext and key material."""
    listing = _run([_tool("pg_restore"), "--list", str(path)])
    if listing.returncode != 0:
        raise ChatsecError(
            f"{path} is not a readable pg_dump archive: {_first_error(listing.stderr)}"
        )
    toc = [ln for ln in listing.stdout.splitlines() if ln and not ln.startswith(";")]
    materials = {k.material.lower(): k.id for k in keyring.keys} if keyring else {}
    problems: list[str] = []
    tables: list[str] = []
    messages = plaintext = 0
    copying: str | None = None
    content_at = -1
    for number, line in enumerate(_script_lines(path), start=1):
        lowered = line.lower()
        for material, key_id in materials.items():
            if material in lowered:
                problems.append(f"line {number}: the secret of key {key_id} is in the dump")
        if copying is not None:
            if line == "\\.":
                copying = None
            elif copying == MESSAGES:
                messages += 1
                fields = line.split("\t")
                value = fields[content_at] if content_at < len(fields) else ""
                if value != "\\N" and not ARMOR.fullmatch(copy_unescape(value)):
                    plaintext += 1
            continue
        start = _COPY_START.match(line)
        if start:
            copying = start.group(1)
            tables.append(copying)
            if copying == MESSAGES:
                columns = [c.strip().strip('"') for c in start.group(2).split(",")]
                if "content" not in columns:
                    problems.append(f"{MESSAGES} data has no content column")
                    copying = "(unchecked)"
                else:
                    content_at = columns.index("content")
            continue
        # Schema text: function bodies, defaults, SET clauses, comments.
        if KEY_SHAPED.search(line):
            problems.append(f"line {number}: a 64-hex-digit (key-shaped) value in the schema")
        if KEY_SETTING_ASSIGNED.search(line):
            problems.append(f"line {number}: an encryption key setting is given a value")
    if MESSAGES not in tables:
        problems.append(f"no {MESSAGES} data in the dump: is this chatsec's chat database?")
    if plaintext:
        problems.append(
            f"{plaintext} of {messages} row(s) of {MESSAGES} hold content that is not "
            "PGP ciphertext (plaintext)"
        )
    return DumpScan(len(toc), messages, tables, problems)


# -- backup -------------------------------------------------------------------------------


def _check_backup_login(url: DatabaseURL) -> None:
    with connect(url, application_name="chatsec backup") as conn:
        row = conn.execute(
            "SELECT r.rolsuper OR r.rolbypassrls, pg_catalog.to_regclass('chat.messages') "
            "IS NOT NULL FROM pg_catalog.pg_roles r WHERE r.rolname = current_user"
        ).fetchone()
    if row is None or not row[0]:
        # pg_dump sets row_security = off and stops at the first table whose policies
        # would hide rows: FORCE ROW LEVEL SECURITY applies even to the owner.
        raise ChatsecError(
            f"{url.user} cannot read every row despite FORCE ROW LEVEL SECURITY: back up with "
            "a superuser or BYPASSRLS login (default $CHATSEC_ADMIN_DATABASE_URL)"
        )
    if not row[1]:
        raise ChatsecError(f"{url.target} has no {MESSAGES}: is this chatsec's chat database?")


def backup(url: DatabaseURL, output: Path, keyring: Keyring | None = None) -> BackupResult:
    """pg_dump to `output`, which exists only if the dump verified (fail closed)."""
    output = Path(output)
    if output.exists():
        raise ChatsecError(f"{output} already exists: a backup never overwrites another")
    if not output.parent.is_dir():
        raise ChatsecError(f"directory {output.parent} does not exist")
    _check_backup_login(url)
    conninfo, env = _libpq(url)
    partial = output.parent / f".{output.name}.partial-{secrets.token_hex(4)}"
    # Created 0600 first: pg_dump keeps the mode of the file it truncates.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        cmd = [_tool("pg_dump"), "--format=custom", f"--file={partial}", "--no-password"]
        cmd += ["--lock-wait-timeout=30s", f"--dbname={conninfo}"]
        res = _run(cmd, env)
        if res.returncode != 0:
            raise ChatsecError(f"pg_dump of {url.target} failed: {_first_error(res.stderr)}")
        scan = verify_dump(partial, keyring)
        if scan.problems:
            raise ChatsecError(
                f"backup of {url.target} refused, no file written: {'; '.join(scan.problems[:3])}"
                + (f" (+{len(scan.problems) - 3} more)" if len(scan.problems) > 3 else "")
            )
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)
    return BackupResult(output, output.stat().st_size, scan)


# -- restore ------------------------------------------------------------------------------

_NOT_EMPTY = """
SELECT 'schema ' || n.nspname FROM pg_catalog.pg_namespace n
 WHERE n.nspname NOT IN ('public', 'information_schema')
   AND n.nspname !~ '^pg_'
UNION ALL
SELECT 'relation ' || c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('information_schema') AND n.nspname !~ '^pg_'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass
                      AND d.objid = c.oid AND d.deptype = 'e')
UNION ALL
SELECT 'function ' || p.oid::pg_catalog.regprocedure::text FROM pg_catalog.pg_proc p
  JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('information_schema') AND n.nspname !~ '^pg_'
   AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                    WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                      AND d.objid = p.oid AND d.deptype = 'e')
UNION ALL
SELECT 'extension ' || e.extname FROM pg_catalog.pg_extension e
 WHERE e.extname NOT IN ('plpgsql', 'pg_stat_statements')
"""


def retarget(url: DatabaseURL, target: DatabaseURL, option: str) -> DatabaseURL:
    """`url` pointed at the restore target's database; it must name the same server."""
    if (url.host, url.port) != (target.host, target.port):
        raise ChatsecError(
            f"{option} points at {url.host}:{url.port}, the target at "
            f"{target.host}:{target.port}: both must name the same server"
        )
    return url.with_database(target.database or "")


def _check_restorable(admin: DatabaseURL, roles: list[str]) -> None:
    with connect(admin, application_name="chatsec restore") as conn:
        row = conn.execute(
            "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user"
        ).fetchone()
        if row is None or not row[0]:
            raise ChatsecError(
                f"{admin.user} is not a superuser: pg_restore must recreate extensions, "
                "ownership by chat_owner and grants (--admin-url or $CHATSEC_ADMIN_DATABASE_URL)"
            )
        found = [str(r[0]) for r in conn.execute(_NOT_EMPTY).fetchall()]
        if found:
            raise ChatsecError(
                f"{admin.target} is not empty ({', '.join(found[:3])}"
                + (f" and {len(found) - 3} more" if len(found) > 3 else "")
                + "): restore only into a new, empty database"
            )
        existing = {
            str(r[0])
            for r in conn.execute(
                "SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY(%s)", (roles,)
            ).fetchall()
        }
    missing = sorted(set(roles) - existing)
    if missing:
        raise ChatsecError(
            f"role(s) {', '.join(missing)} missing on {admin.host}:{admin.port}: roles are "
            "cluster-wide and not in a pg_dump; create them first (pg_dumpall --roles-only "
            "on the source cluster)"
        )


def restore_dump(path: Path, admin: DatabaseURL, roles: list[str]) -> None:
    """pg_restore into the empty database `admin` names, all or nothing."""
    if not Path(path).is_file():
        raise ChatsecError(f"backup file {path} does not exist")
    _check_restorable(admin, roles)
    conninfo, env = _libpq(admin)
    # One transaction: a failure leaves the database as empty as it was.
    cmd = [_tool("pg_restore"), "--exit-on-error", "--single-transaction", "--no-password"]
    cmd += [f"--dbname={conninfo}", str(path)]
    res = _run(cmd, env)
    if res.returncode != 0:
        raise ChatsecError(
            f"pg_restore into {admin.target} failed, nothing restored: {_first_error(res.stderr)}"
        )
