"""The shapes every check produces: findings, and one result per check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Level = Literal["error", "warning", "info"]
Status = Literal["passed", "failed", "skipped"]
LEVELS: tuple[Level, ...] = ("error", "warning", "info")
# Higher is more severe; --fail-on compares against this.
SEVERITY: dict[str, int] = {"info": 0, "warning": 1, "error": 2}


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

    def to_json(self) -> dict[str, str]:
        return {
            "check_id": self.check_id,
            "title": self.title,
            "level": self.level,
            "category": self.category,
            "object": self.object,
            "detail": self.detail,
            "remediation": self.remediation,
        }


@dataclass
class CheckResult:
    """What one check concluded: passed, failed (an error or warning finding) or skipped."""

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
        return "failed" if any(f.level != "info" for f in findings) else "passed"

    def worst(self) -> int:
        return max((SEVERITY[f.level] for f in self.findings), default=-1)

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
