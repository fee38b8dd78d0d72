"""Turning `chatsec plan`'s changes into findings: each change kind belongs to one check."""

from __future__ import annotations

from collections.abc import Callable

from chatsec.audit.check import Check
from chatsec.audit.finding import Finding
from chatsec.policy.compare import Change

GRANT_KINDS = {
    "database-grant",
    "schema-grant",
    "table-grant",
    "sequence-grant",
    "function-grant",
}


def grantee(change: Change) -> str | None:
    """The role a grant change is about ('... to ROLE'), None for other kinds."""
    if change.kind not in GRANT_KINDS and change.kind != "default-privilege":
        return None
    return change.object.rpartition(" to ")[2]


def grant_object(change: Change) -> str:
    return change.object.rpartition(" to ")[0]


def findings_from(
    check: Check, changes: list[Change], keep: Callable[[Change], bool]
) -> list[Finding]:
    out = []
    for change in changes:
        if not keep(change):
            continue
        # The plan's own SQL is the most precise remediation there is.
        fix = "; ".join(change.up) if change.up else check.remediation
        if len(fix) > 300:
            fix = "run `chatsec plan` and apply its SQL through a revision"
        out.append(check.finding(change.object, f"{change.action}: {change.detail}",
                                 remediation=fix))
    return out
