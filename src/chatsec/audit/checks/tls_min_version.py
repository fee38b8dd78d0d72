"""ssl_min_protocol_version: an error below TLSv1.2, a warning below TLSv1.3."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

_ORDER = {"": 0, "TLSv1": 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4}


def _run(ctx: AuditContext) -> list[Finding]:
    value = ctx.settings.get("ssl_min_protocol_version", "")
    rank = _ORDER.get(value, 0)
    fix = "ssl_min_protocol_version = 'TLSv1.3' (libpq 12+ and every current driver speak it)"
    if rank < _ORDER["TLSv1.2"]:
        return [CHECK.finding("setting ssl_min_protocol_version",
                              f"{value or '(any)'} allows protocol versions with known "
                              "weaknesses (deprecated by RFC 8996)", remediation=fix)]
    if rank < _ORDER["TLSv1.3"]:
        return [CHECK.finding("setting ssl_min_protocol_version",
                              f"{value}: TLSv1.2 is still acceptable, but its cipher suites "
                              "need care that TLSv1.3 removes", level="warning", remediation=fix)]
    return []


CHECK = Check(
    id="tls-min-version",
    title="TLS 1.2 at least, 1.3 preferred",
    category="server",
    level="error",
    description="ssl_min_protocol_version: error below TLSv1.2, warning at TLSv1.2. Needs: any "
                "login.",
    remediation="ssl_min_protocol_version = 'TLSv1.3'",
    run=_run,
)
