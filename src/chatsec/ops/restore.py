"""Restore a verified backup into an empty database, then prove it: revision, audit, decryption."""

from __future__ import annotations

from pathlib import Path

import psycopg

from chatsec.audit.api import audit
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.keys import registry
from chatsec.keys.keyring import Keyring
from chatsec.migrate import runner
from chatsec.ops.backup import RestoreReport, restore_dump, verify_dump
from chatsec.policy.load import load_policies

_DECRYPT_ALL = (
    "SELECT count(*), count(chat.decrypt_message(content, key_id, id, thread_id)) "
    "FROM chat.messages"
)


def restore(
    path: Path,
    target: DatabaseURL,
    admin: DatabaseURL,
    auditor: DatabaseURL,
    app: DatabaseURL | None = None,
    keyring: Keyring | None = None,
) -> RestoreReport:
    """Restore `path` into `target` (the migrator's URL) and check what was restored.

    The dump is verified first (no plaintext, no key material) so a tampered file is
    never loaded; `admin` runs pg_restore; `auditor` runs the audit (probes as `app`
    when given); with a keyring every restored message must decrypt.
    """
    scan = verify_dump(path, keyring)
    if scan.problems:
        raise ChatsecError(f"{path} is not restored: {'; '.join(scan.problems[:3])}")
    declared = load_policies()
    restore_dump(path, admin, sorted(declared.roles))
    state = runner.status(target)
    report = RestoreReport(target.target, state.current, state.heads)
    results = audit(
        auditor,
        app_url=app,
        probe=app is not None,
        keyring=keyring.path if keyring else None,
    ).results
    report.audit_passed = sum(1 for r in results if r.status == "passed")
    report.audit_failed = [r.check_id for r in results if r.status == "failed"]
    report.audit_skipped = [r.check_id for r in results if r.status == "skipped"]
    report.audit_warnings = sum(1 for r in results for f in r.findings if f.level == "warning")
    if keyring is not None:
        report.messages, report.decrypted = decrypt_all(target, keyring)
    else:
        report.messages = count_messages(target)
    return report


def decrypt_all(url: DatabaseURL, keyring: Keyring) -> tuple[int, int]:
    """(messages, messages that decrypt) with the keyring, as the key rotator reads them."""
    try:
        with registry.acting_as(url, registry.ROTATOR, keyring, "chatsec restore") as conn:
            row = conn.execute(_DECRYPT_ALL).fetchone()
    except psycopg.Error as exc:
        reason = (exc.diag.message_primary if exc.diag else None) or str(exc)
        raise ChatsecError(
            f"restored messages do not decrypt with keyring {keyring.path}: {reason}"
        ) from None
    assert row is not None
    return int(row[0]), int(row[1])


def count_messages(url: DatabaseURL) -> int:
    with registry.acting_as(url, registry.ROTATOR, None, "chatsec restore") as conn:
        row = conn.execute("SELECT count(*) FROM chat.messages").fetchone()
    return int(row[0]) if row else 0
