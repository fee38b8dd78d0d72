"""What a check module declares: metadata plus a run(ctx) function returning findings."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatsec.audit.finding import Finding, Level

if TYPE_CHECKING:
    from chatsec.audit.context import AuditContext

# Report order; a check's category must be one of these.
CATEGORIES = ("declared-state", "privileges", "functions", "encryption", "server", "behaviour")


class Skip(Exception):  # noqa: N818 - reads as `raise Skip("needs ...")`
    """Raised by a check that cannot verify: the reason must name what is missing."""


@dataclass(frozen=True)
class Check:
    """One check: module `checks/<id with _>.py` defines `CHECK = Check(...)`."""

    id: str
    title: str
    category: str
    level: Level  # default level of its findings
    description: str  # what it verifies, and what it needs (privileges, URLs)
    remediation: str  # default fix line
    run: Callable[[AuditContext], list[Finding]]

    def finding(
        self,
        obj: str,
        detail: str,
        *,
        level: Level | None = None,
        remediation: str | None = None,
    ) -> Finding:
        return Finding(
            check_id=self.id,
            title=self.title,
            level=level or self.level,
            category=self.category,
            object=obj,
            detail=detail,
            remediation=remediation or self.remediation,
        )
