"""Behaviour: a non-TLS connection to the audited host and port is refused."""

from __future__ import annotations

from chatsec.audit.check import Check, Skip
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.tls.plaintext import try_plaintext


def _run(ctx: AuditContext) -> list[Finding]:
    if not ctx.probe.enabled:
        raise Skip("probes disabled (--no-probe)")
    if not ctx.url.host or ctx.url.host.startswith("/"):
        raise Skip("the audit URL is a Unix socket: there is no TCP endpoint to probe")
    # The audit login's own credentials: a refusal then cannot be a wrong password.
    attempt = try_plaintext(ctx.url)
    endpoint = f"{ctx.url.host}:{ctx.url.port or 5432}"
    if attempt.accepted is False:
        return []
    if attempt.accepted is True:
        return [CHECK.finding(endpoint, f"a non-TLS connection was accepted: {attempt.reason}")]
    return [CHECK.finding(endpoint, f"could not tell whether non-TLS is refused: {attempt.reason}",
                          level="warning")]


CHECK = Check(
    id="probe-plaintext-connection",
    title="Non-TLS connections are refused",
    category="behaviour",
    level="error",
    description="Connects to the audited host and port with sslmode=disable and the audit "
                "login's credentials; only a pg_hba.conf refusal passes. Needs: TCP URL.",
    remediation="pg_hba.conf: hostssl lines only, and hostnossl all all 0.0.0.0/0 reject",
    run=_run,
)
