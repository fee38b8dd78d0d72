"""TLS from the outside: the versions, cipher suites and groups the audited server accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from chatsec.audit.check import Check, Skip
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.audit.tls_probe import CIPHERS_FIX, ProbeError, findings_for, probe_server
from chatsec.db.url import DatabaseURL


def _rootcert(url: DatabaseURL) -> Path | Literal["system"] | None:
    """The CA the audit's own session trusts, when that session verifies the server."""
    value = url.query.get("sslrootcert")
    if url.sslmode != "verify-full" or not value:
        return None
    return "system" if value == "system" else Path(value)


def _run(ctx: AuditContext) -> list[Finding]:
    if not ctx.probe.enabled:
        raise Skip("probes disabled (--no-probe)")
    host, port = ctx.url.host, ctx.url.port or 5432
    if not host or host.startswith("/"):
        raise Skip(
            "needs a TCP host in the audit URL: it is a Unix socket, so there is no "
            "TLS endpoint to probe"
        )
    try:
        # The probe's own handshakes do not authenticate (they must see every suite the
        # server accepts); with the URL's CA, one that does comes first.
        result = probe_server(host, port, rootcert=_rootcert(ctx.url))
    except ProbeError as exc:
        raise Skip(f"needs TLS handshakes with {host}:{port} from the audit: {exc}") from None
    return findings_for(result, CHECK)


CHECK = Check(
    id="tls-cipher-suites",
    title="Only AEAD cipher suites with forward secrecy, TLS 1.2 at least",
    category="server",
    level="error",
    description="Handshakes with the audited host and port (SSLRequest, then TLS): one pinned to "
    "each of TLSv1 to TLSv1.3, then for each accepted version below TLSv1.3 one per "
    "cipher suite the local OpenSSL offers at @SECLEVEL=0, then one per key-exchange "
    "group. TLSv1/TLSv1.1 accepted, or an accepted suite that is not ECDHE/DHE with "
    "AES-GCM, AES-CCM (not CCM_8) or ChaCha20-Poly1305: error (ARIA-GCM, TLSv1.3 "
    "refused: warning); groups, cipher order and the suites tried: info. With "
    "sslmode=verify-full the server first proves its identity against the URL's "
    "sslrootcert. Needs: a TCP URL, the probes on (--probe).",
    remediation=CIPHERS_FIX,
    run=_run,
)
