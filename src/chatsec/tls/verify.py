"""`chatsec ssl verify`: the server's certificate and TLS setup, checked from the outside.

PostgreSQL starts TLS inside its own protocol (an 8-byte SSLRequest answered by 'S'),
so generic TLS scanners cannot talk to it; this does the handshake itself, then
checks what it got with `cryptography`, tries every protocol version, cipher suite and
key-exchange group (chatsec.audit.tls_probe), and finally asks libpq (verify-full) and
the server's pg_stat_ssl for their view of a real session.
"""

from __future__ import annotations

import ipaddress
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa

from chatsec.audit.check import Check
from chatsec.audit.finding import CheckResult, Finding, Level
from chatsec.audit.runner import AuditReport
from chatsec.audit.tls_probe import (
    ProbeError,
    probe_server,
    start_tls,
    suite_findings,
    version_findings,
)
from chatsec.db.connect import CONNECT_TIMEOUT_S, describe_connect_error
from chatsec.db.url import DatabaseURL
from chatsec.errors import ChatsecError
from chatsec.tls.plaintext import try_plaintext

# OpenSSL's X509_V_FLAG_NO_CHECK_TIME: the chain check leaves dates to ssl-expiry.
_NO_CHECK_TIME = 0x200000
_WEAK_HASHES = {"md5", "sha1"}


@dataclass
class Handshake:
    protocol: str | None
    cipher: str | None
    chain: list[x509.Certificate]


@dataclass
class TlsReport:
    report: AuditReport
    details: dict[str, Any] = field(default_factory=dict)


def _peer_chain(tls: ssl.SSLSocket) -> list[x509.Certificate]:
    # Python 3.13 has SSLSocket.get_unverified_chain(); 3.10-3.12 have it on the
    # internal _sslobj only. Without either, the leaf alone.
    ders: list[bytes] = []
    public = getattr(tls, "get_unverified_chain", None)
    if public is not None:
        ders = [bytes(c) for c in public()]
    else:
        internal = getattr(getattr(tls, "_sslobj", None), "get_unverified_chain", None)
        if internal is not None:
            ders = [c.public_bytes(ssl._ssl.ENCODING_DER) for c in internal() or []]  # type: ignore[attr-defined]
    if not ders:
        leaf = tls.getpeercert(binary_form=True)
        ders = [leaf] if leaf else []
    return [x509.load_der_x509_certificate(d) for d in ders]


def fetch_chain(host: str, port: int) -> Handshake:
    """Handshake without verification, to see whatever the server presents."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # noqa: S503 - only to fetch the chain; verified below
    try:
        with start_tls(host, port, ctx, None, CONNECT_TIMEOUT_S) as tls:
            cipher = tls.cipher()
            return Handshake(tls.version(), cipher[0] if cipher else None, _peer_chain(tls))
    except ssl.SSLError as exc:
        raise ChatsecError(f"TLS handshake with {host}:{port} failed: {exc.reason or exc}") from None


def _verify_context(rootcert: Path | None) -> ssl.SSLContext:
    if rootcert is None:
        ctx = ssl.create_default_context()
    else:
        try:
            ctx = ssl.create_default_context(cafile=str(rootcert))
        except (OSError, ssl.SSLError) as exc:
            raise ChatsecError(f"cannot load CA certificates from {rootcert}: {exc}") from None
    ctx.check_hostname = False  # the hostname has its own check
    ctx.verify_flags |= _NO_CHECK_TIME
    return ctx


def verify_chain(host: str, port: int, rootcert: Path | None) -> str | None:
    """None when the chain verifies against the CA (dates aside), else OpenSSL's reason."""
    try:
        with start_tls(host, port, _verify_context(rootcert), None, CONNECT_TIMEOUT_S):
            return None
    except ssl.SSLCertVerificationError as exc:
        return exc.verify_message or str(exc)
    except ssl.SSLError as exc:
        return str(exc.reason or exc)


def hostname_matches(cert: x509.Certificate, host: str) -> bool:
    """RFC 6125 matching against the SANs (the CN is ignored, as libpq does when SANs exist)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if san is None:
        cns = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        return bool(cns) and str(cns[0].value).lower() == host.lower()
    if ip is not None:
        return ip in san.get_values_for_type(x509.IPAddress)
    wanted = host.lower().rstrip(".")
    for name in san.get_values_for_type(x509.DNSName):
        pattern = name.lower().rstrip(".")
        if pattern == wanted:
            return True
        if pattern.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == pattern[2:]:
            return True
    return False


def describe_key(cert: x509.Certificate) -> tuple[str, Level | None]:
    key = cert.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        size = key.key_size
        return f"RSA {size}", "error" if size < 2048 else None
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"ECDSA {key.curve.name} ({key.key_size} bits)", (
            "error" if key.key_size < 256 else None)
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "Ed25519", None
    if isinstance(key, ed448.Ed448PublicKey):
        return "Ed448", None
    if isinstance(key, dsa.DSAPublicKey):
        return f"DSA {key.key_size}", "error"
    return type(key).__name__, "warning"


def _check(cid: str, title: str, level: Level, description: str, remediation: str) -> Check:
    def never(_ctx: object) -> list[Finding]:  # results are computed by verify_server
        return []

    return Check(cid, title, "tls", level, description, remediation, never)


CHAIN = _check("ssl-chain", "Certificate chain verifies", "error",
               "The chain the server presents verifies against --sslrootcert, the URL's "
               "sslrootcert, or the system store (dates are ssl-expiry's).",
               "install a certificate signed by the CA the clients trust")
HOSTNAME = _check("ssl-hostname", "Certificate matches the host name", "error",
                  "The leaf's subjectAltName (DNS or IP) matches the URL's host.",
                  "issue the certificate for the name clients connect to")
EXPIRY = _check("ssl-expiry", "Certificate valid, not expiring soon", "error",
                "Every certificate of the chain is within its validity; the leaf has at least "
                "--min-days left (warning).", "renew the certificate")
KEY = _check("ssl-key", "Strong certificate keys", "error",
             "RSA at least 2048 bits, ECDSA at least P-256, or Ed25519/Ed448.",
             "reissue with an ECDSA P-256 or RSA 3072 key")
SIGNATURE = _check("ssl-signature", "Strong signature hashes", "error",
                   "No MD5 or SHA-1 signature in the chain (the root's own is not used).",
                   "reissue with SHA-256 or better")
PROTOCOL = _check("ssl-protocol", "Negotiated protocol", "error",
                  "The protocol this handshake negotiated is TLSv1.2 or later.",
                  "ssl_min_protocol_version = 'TLSv1.3'")
VERSIONS = _check("ssl-protocol-versions", "Only TLS 1.2 and 1.3 accepted", "error",
                  "One handshake pinned to each of TLSv1, TLSv1.1, TLSv1.2 and TLSv1.3: "
                  "accepting TLSv1 or TLSv1.1 is an error, refusing TLSv1.3 a warning.",
                  "ssl_min_protocol_version = 'TLSv1.3'")
SUITES = _check("ssl-cipher-suites", "Only AEAD cipher suites with forward secrecy", "error",
                "For each version below TLSv1.3 the server accepts, one handshake per cipher "
                "suite the local OpenSSL offers at @SECLEVEL=0: an accepted suite that is not "
                "ECDHE/DHE with AES-GCM, AES-CCM (not CCM_8) or ChaCha20-Poly1305 is an error "
                "(ARIA-GCM a warning); accepted key-exchange groups and cipher order are info.",
                "ssl_ciphers = 'ECDHE+AESGCM:ECDHE+CHACHA20'")
SESSION = _check("ssl-session", "libpq verify-full session", "error",
                 "psycopg connects with sslmode=verify-full; its pg_stat_ssl row is reported.",
                 "fix the certificate findings above, or the URL's credentials")
PLAINTEXT = _check("ssl-plaintext-refused", "Non-TLS refused", "error",
                   "A connection with sslmode=disable is refused by pg_hba.conf.",
                   "pg_hba.conf: hostssl lines only, hostnossl ... reject")


def _result(check: Check, findings: list[Finding], started: float) -> CheckResult:
    return CheckResult(check.id, check.title, check.category, check.level, check.description,
                       CheckResult.status_for(findings), findings,
                       duration_s=time.perf_counter() - started)


def _skipped(check: Check, reason: str) -> CheckResult:
    return CheckResult(check.id, check.title, check.category, check.level, check.description,
                       "skipped", [], reason)


def _name(name: x509.Name) -> str:
    return name.rfc4514_string()


def verify_server(url: DatabaseURL, rootcert: Path | None = None, min_days: int = 30,
                  now: Callable[[], datetime] = lambda: datetime.now(UTC)) -> TlsReport:
    """Every TLS check against the server of `url`; ChatsecError when it cannot even start."""
    if not url.host or url.host.startswith("/"):
        raise ChatsecError("ssl verify needs a TCP host in the URL, not a Unix socket")
    host, port = url.host, url.port or 5432
    if rootcert is None and url.query.get("sslrootcert") not in (None, "", "system"):
        rootcert = Path(url.query["sslrootcert"])
    report = AuditReport(f"{host}:{port}", url.user or "", datetime.now(UTC))
    started_all = time.perf_counter()
    tls = TlsReport(report)

    t = time.perf_counter()
    hs = fetch_chain(host, port)
    if not hs.chain:
        raise ChatsecError(f"{host}:{port} presented no certificate")
    leaf = hs.chain[0]
    tls.details = {
        "protocol": hs.protocol, "cipher": hs.cipher,
        "subject": _name(leaf.subject), "issuer": _name(leaf.issuer),
        "not_before": leaf.not_valid_before_utc.isoformat(),
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "chain_length": len(hs.chain),
        "ca": str(rootcert) if rootcert else "system store",
    }
    results = report.results

    reason = verify_chain(host, port, rootcert)
    results.append(_result(CHAIN, [] if reason is None else [CHAIN.finding(
        _name(leaf.subject), f"does not verify against {tls.details['ca']}: {reason}")], t))

    t = time.perf_counter()
    ok = hostname_matches(leaf, host)
    tls.details["hostname"] = host
    results.append(_result(HOSTNAME, [] if ok else [HOSTNAME.finding(
        _name(leaf.subject), f"the certificate is not valid for {host}")], t))

    t = time.perf_counter()
    findings = []
    moment = now()
    days_left = (leaf.not_valid_after_utc - moment).total_seconds() / 86400
    tls.details["days_left"] = round(days_left, 1)
    for i, cert in enumerate(hs.chain):
        label = "leaf" if i == 0 else f"chain[{i}]"
        if cert.not_valid_after_utc < moment:
            findings.append(EXPIRY.finding(f"{label} {_name(cert.subject)}",
                                           f"expired on {cert.not_valid_after_utc:%Y-%m-%d}"))
        elif cert.not_valid_before_utc > moment:
            findings.append(EXPIRY.finding(f"{label} {_name(cert.subject)}",
                                           f"not valid before {cert.not_valid_before_utc:%Y-%m-%d}"))
    if not findings and days_left < min_days:
        findings.append(EXPIRY.finding(f"leaf {_name(leaf.subject)}",
                                       f"expires in {days_left:.0f} day(s) (< {min_days})",
                                       level="warning"))
    results.append(_result(EXPIRY, findings, t))

    t = time.perf_counter()
    findings = []
    keys = []
    for i, cert in enumerate(hs.chain):
        text, level = describe_key(cert)
        keys.append(text)
        if level:
            findings.append(KEY.finding(f"chain[{i}] {_name(cert.subject)}", f"weak key: {text}",
                                        level=level))
    tls.details["keys"] = keys
    results.append(_result(KEY, findings, t))

    t = time.perf_counter()
    findings = []
    hashes = []
    for i, cert in enumerate(hs.chain):
        algo = cert.signature_hash_algorithm
        name = algo.name if algo else "none (EdDSA)"
        hashes.append(name)
        self_signed = cert.issuer == cert.subject
        if algo and algo.name in _WEAK_HASHES and not self_signed:
            findings.append(SIGNATURE.finding(f"chain[{i}] {_name(cert.subject)}",
                                              f"signed with {algo.name}"))
    tls.details["signature_hashes"] = hashes
    results.append(_result(SIGNATURE, findings, t))

    t = time.perf_counter()
    weak_protocol = hs.protocol in {None, "SSLv3", "TLSv1", "TLSv1.1"}
    results.append(_result(PROTOCOL, [PROTOCOL.finding(
        f"{host}:{port}", f"negotiated {hs.protocol}")] if weak_protocol else [], t))

    t = time.perf_counter()
    cert_failed = [r.check_id for r in results if r.status == "failed" and r.worst() >= 2]
    session = _session(url, rootcert)
    if isinstance(session, dict):
        tls.details["pg_stat_ssl"] = session
        results.append(_result(SESSION, [] if session.get("ssl") else [SESSION.finding(
            "pg_stat_ssl", "the session is not encrypted")], t))
    elif cert_failed:
        # libpq refusing a certificate the checks above already failed is that failure.
        results.append(_skipped(SESSION, f"libpq refused the certificate that "
                                         f"{', '.join(cert_failed)} already reports: {session}"))
    else:
        results.append(_result(SESSION, [SESSION.finding(f"{host}:{port}", session)], t))

    t = time.perf_counter()
    attempt = try_plaintext(url)
    if attempt.accepted is False:
        plain: list[Finding] = []
    elif attempt.accepted is True:
        plain = [PLAINTEXT.finding(f"{host}:{port}", f"non-TLS accepted: {attempt.reason}")]
    else:
        plain = [PLAINTEXT.finding(f"{host}:{port}", f"inconclusive: {attempt.reason}",
                                   level="warning")]
    tls.details["plaintext"] = attempt.reason
    results.append(_result(PLAINTEXT, plain, t))

    t = time.perf_counter()
    try:
        probe = probe_server(host, port)
    except ProbeError as exc:
        # Fail closed: a probe that did not run to the end passes nothing.
        tls.details["probe"] = {"error": str(exc)}
        results.append(_skipped(VERSIONS, f"the TLS probe could not run: {exc}"))
        results.append(_skipped(SUITES, f"the TLS probe could not run: {exc}"))
    else:
        tls.details["probe"] = probe.to_json()
        results.append(_result(VERSIONS, version_findings(probe, VERSIONS), t))
        results.append(_result(SUITES, suite_findings(probe, SUITES), t))
    report.duration_s = time.perf_counter() - started_all
    return tls


def _session(url: DatabaseURL, rootcert: Path | None) -> dict[str, Any] | str:
    """pg_stat_ssl of a verify-full session, or libpq's one-line reason for refusing."""
    params = {"sslmode": "verify-full"}
    if rootcert is not None:
        params["sslrootcert"] = str(rootcert)
    target = url.with_query(**params)
    try:
        with psycopg.connect(target.libpq, connect_timeout=CONNECT_TIMEOUT_S,
                             application_name="chatsec ssl verify") as conn:
            cur = conn.execute("SELECT * FROM pg_catalog.pg_stat_ssl "
                               "WHERE pid = pg_catalog.pg_backend_pid()")
            names = [d.name for d in cur.description or []]
            row = cur.fetchone()
    except psycopg.Error as exc:
        return describe_connect_error(target, exc)
    if row is None:
        return "no pg_stat_ssl row for the session"
    return {k: (v if isinstance(v, bool | int | str) or v is None else str(v))
            for k, v in zip(names, row, strict=True)}
