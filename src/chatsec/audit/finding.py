"""The shapes every check produces: findings, and one result per check."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Literal

Level = Literal["error", "warning", "info"]
# "suppressed": every error/warning finding was accepted by the allowlist (the check would
# otherwise have failed). Only an audit run with an allowlist entry can produce it.
Status = Literal["passed", "failed", "skipped", "suppressed"]
LEVELS: tuple[Level, ...] = ("error", "warning", "info")
# Higher is more severe; --fail-on compares against this.
SEVERITY: dict[str, int] = {"info": 0, "warning": 1, "error": 2}
# A finding's JSON values (named here: inside Finding, `object` is the field).
FindingJSON = dict[str, str | bool | dict[str, str | None] | None]


@dataclass(frozen=True)
class Suppression:
    """Why a finding is accepted: the allowlist entry's reason, where it is, until when."""

    reason: str
    source: str  # "chatsec-audit.toml, entry 2" or "--ignore ID[:OBJECT]"
    expires: date | None = None

    def to_json(self) -> dict[str, str | None]:
        return {
            "reason": self.reason,
            "source": self.source,
            "expires": self.expires.isoformat() if self.expires else None,
        }


@dataclass(frozen=True)
class Finding:
    """One thing a check found wrong (or, at level info, worth knowing) about one object."""

    check_id: str
    title: str
    level: Level
    category: str
    object: str
    detail: str
    remediation: str
    # Set only by the allowlist, after the checks ran; checks never set it.
    suppression: Suppression | None = None

    @property
    def suppressed(self) -> bool:
        return self.suppression is not None

    def to_json(self) -> FindingJSON:
        return {
            "check_id": self.check_id,
            "title": self.title,
            "level": self.level,
            "category": self.category,
            "object": self.object,
            "detail": self.detail,
            "remediation": self.remediation,
            "suppressed": self.suppressed,
            "suppression": self.suppression.to_json() if self.suppression else None,
        }


@dataclass
class CheckResult:
    """What one check concluded: passed, failed (an error or warning finding), skipped, or
    suppressed (it would have failed, but the allowlist accepts every failing finding)."""

    check_id: str
    title: str
    category: str
    level: Level  # the check's default level, for SARIF rules
    description: str
    status: Status
    findings: list[Finding] = field(default_factory=list)
    skip_reason: str | None = None
    duration_s: float = 0.0

    @staticmethod
    def status_for(findings: list[Finding]) -> Status:
        # Info findings inform; only errors and warnings make a check fail.
        failing = [f for f in findings if f.level != "info"]
        if any(not f.suppressed for f in failing):
            return "failed"
        return "suppressed" if failing else "passed"

    def active_findings(self) -> list[Finding]:
        """The findings that count: every finding the allowlist does not accept."""
        return [f for f in self.findings if not f.suppressed]

    def suppressed_findings(self) -> list[Finding]:
        return [f for f in self.findings if f.suppressed]

    def worst(self) -> int:
        # Suppressed findings are accepted: they never reach --fail-on.
        return max((SEVERITY[f.level] for f in self.active_findings()), default=-1)

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.check_id,
            "title": self.title,
            "category": self.category,
            "level": self.level,
            "status": self.status,
            "skip_reason": self.skip_reason,
            "duration_ms": round(self.duration_s * 1000, 3),
            "findings": [f.to_json() for f in self.findings],
        }
