"""Logical backups that keep the encryption promise, verified before they count, and restores.

A backup is `pg_dump --format=custom`, written to a private temporary file and renamed
to its name only after the dump was read back in full and found to hold proven
ciphertext, no key material and no plaintext outside it (chatsec.ops.dumpscan). The
keys live in the keyring, never in the database, so a backup without its keyring is
unreadable by design (docs/operations.md).
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from chatsec.db.connect import connect, require_verified_tls
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys.keyring import Keyring
from chatsec.ops.dumpscan import MESSAGES, DumpScan, verify_dump
from chatsec.sandbox.binaries import first_error, run_tool, tool

# verify_dump and DumpScan moved to chatsec.ops.dumpscan; restore imports them from here.
__all__ = [
    "BackupResult",
    "DumpScan",
    "RestoreReport",
    "backup",
    "dump_to",
    "restore_dump",
    "retarget",
    "verify_dump",
]


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


def _libpq(url: DatabaseURL) -> tuple[str, dict[str, str]]:
    """A conninfo without the password, and the variables that carry it (never argv)."""
    require_verified_tls(url)
    # Passed on top of binaries.child_env(): no PG* redirects, no CHATSEC_* secrets.
    extra = {"PGCONNECT_TIMEOUT": "10"}
    if url.password is not None:
        extra["PGPASSWORD"] = url.password
    return url.with_credentials(url.user or "", None).libpq, extra


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


def dump_to(url: DatabaseURL, path: Path) -> None:
    """pg_dump --format=custom of `url` into the existing file `path`, unverified."""
    conninfo, env = _libpq(url)
    cmd = [tool("pg_dump"), "--format=custom", f"--file={path}", "--no-password"]
    cmd += ["--lock-wait-timeout=30s", f"--dbname={conninfo}"]
    res = run_tool(cmd, env)
    if res.returncode != 0:
        raise ChatsecError(f"pg_dump of {url.target} failed: {first_error(res.stderr)}")


def backup(url: DatabaseURL, output: Path, keyring: Keyring | None = None) -> BackupResult:
    """pg_dump to `output`, which exists only if the dump verified (fail closed)."""
    output = Path(output)
    if output.exists():
        raise ChatsecError(f"{output} already exists: a backup never overwrites another")
    if not output.parent.is_dir():
        raise ChatsecError(f"directory {output.parent} does not exist")
    _check_backup_login(url)
    partial = output.parent / f".{output.name}.partial-{secrets.token_hex(4)}"
    # Created 0600 first: pg_dump keeps the mode of the file it truncates.
    os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    try:
        dump_to(url, partial)
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
    cmd = [tool("pg_restore"), "--exit-on-error", "--single-transaction", "--no-password"]
    cmd += [f"--dbname={conninfo}", str(path)]
    res = run_tool(cmd, env)
    if res.returncode != 0:
        raise ChatsecError(
            f"pg_restore into {admin.target} failed, nothing restored: {first_error(res.stderr)}"
        )
