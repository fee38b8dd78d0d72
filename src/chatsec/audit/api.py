"""One call for the CLI, the demo and tests: connect as the auditor and run the checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from chatsec.audit.allowlist import AllowEntry, apply_allowlist
from chatsec.audit.context import AuditContext, ProbeConfig
from chatsec.audit.registry import select_checks
from chatsec.audit.runner import AuditReport, run_audit
from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.policy.load import load_policies


def audit(
    url: DatabaseURL,
    *,
    app_url: DatabaseURL | None = None,
    policies: Path | None = None,
    check_ids: Iterable[str] | None = None,
    probe: bool = True,
    keyring: Path | None = None,
    identity_keyring: Path | None = None,
    allowlist: Sequence[AllowEntry] = (),
) -> AuditReport:
    """Run the selected checks (all by default); bad input raises ChatsecError (exit 2).

    `allowlist` (see chatsec.audit.allowlist) marks accepted findings suppressed afterwards.
    """
    checks = select_checks(check_ids)
    declared = load_policies(policies)
    # Autocommit: the runner opens (and rolls back) one transaction per check itself.
    with connect(url, autocommit=True, application_name="chatsec audit") as conn:
        ctx = AuditContext(
            conn, url, declared, ProbeConfig(probe, app_url, keyring, identity_keyring)
        )
        report = run_audit(ctx, checks)
    # After the run, in one place: the checks never see the allowlist.
    apply_allowlist(report, allowlist)
    return report
