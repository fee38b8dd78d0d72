"""TLS from the outside: the protocol versions, cipher suites and key-exchange groups a
PostgreSQL server accepts, found by trying them.

PostgreSQL starts TLS inside its own protocol (an 8-byte SSLRequest answered by 'S'), so
every attempt here is: TCP connect, SSLRequest, then a real handshake with a client pinned
to one protocol version and one cipher suite (or one group). The order is bounded and does
only what is needed: one handshake per version (TLSv1 to TLSv1.3); for each version below
TLSv1.3 that the server accepts, one per cipher suite the local OpenSSL can offer for it;
one per key-exchange group at the highest accepted version; two to see whose cipher order
wins. At most PROBE_PARALLEL handshakes run at once. Any network failure or timeout aborts
the whole probe with ProbeError: an incomplete probe is reported as not run, never as a
pass.

Used by `chatsec ssl verify` and the `tls-cipher-suites` audit check.
"""

from __future__ import annotations

import re
import socket
import ssl
import struct
import threading
import time
import warnings
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from chatsec.audit.check import Check
from chatsec.audit.finding import Finding, Level
from chatsec.errors import ChatsecError

SSL_REQUEST = struct.pack("!ii", 8, 80877103)  # length 8, code 1234 5679
PROBE_TIMEOUT_S = 3.0
# Handshakes in flight at once: a few, so a probe takes a fraction of a second and the
# server never sees more than this many probe connections.
PROBE_PARALLEL = 4
# The remediations every probe finding points at (ssl_ciphers has no say in TLS 1.3).
CIPHERS_FIX = (
    "ssl_ciphers = 'ECDHE+AESGCM:ECDHE+CHACHA20' (or ssl_min_protocol_version = 'TLSv1.3')"
)
VERSION_FIX = "ssl_min_protocol_version = 'TLSv1.3' (at least 'TLSv1.2')"
_NOTHING_TO_FIX = "nothing to fix: what the probe tried and saw"

# Every suite the local OpenSSL has. @SECLEVEL=0 because the probe must offer what a weak
# client would, to find what the server accepts, not what a careful client would send.
ALL_SUITES = "ALL:COMPLEMENTOFALL"
_SECLEVEL_0 = ":@SECLEVEL=0"

Version = Literal["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"]
VERSIONS: tuple[tuple[Version, ssl.TLSVersion], ...] = (
    ("TLSv1", ssl.TLSVersion.TLSv1),
    ("TLSv1.1", ssl.TLSVersion.TLSv1_1),
    ("TLSv1.2", ssl.TLSVersion.TLSv1_2),
    ("TLSv1.3", ssl.TLSVersion.TLSv1_3),
)
DEPRECATED_VERSIONS: frozenset[str] = frozenset({"TLSv1", "TLSv1.1"})  # RFC 8996
# OpenSSL's `protocol` of a suite: the oldest version it exists in.
_SUITE_MIN_VERSION = {"SSLv3": 0, "TLSv1.0": 0, "TLSv1.2": 2, "TLSv1.3": 3}

# Key exchanges a client can only offer with a pre-shared key or an SRP password; PostgreSQL
# configures neither, so neither side could use them.
_CREDENTIAL_KEX = frozenset({"kx-psk", "kx-dhe-psk", "kx-rsa-psk", "kx-ecdhe-psk", "kx-srp"})
_FORWARD_SECRET_KEX = frozenset({"kx-ecdhe", "kx-dhe"})
# The AEAD ciphers clients and baselines (NIST SP 800-52r2, Mozilla) expect.
_EXPECTED_AEAD = re.compile(r"^(aes-(128|256)-(gcm|ccm)|chacha20-poly1305)$")

# Tried one at a time, so the ClientHello offers only that group. OpenSSL clients use the
# finite-field groups only in TLS 1.3.
_EC_GROUPS = ("X25519", "X448", "prime256v1", "secp384r1", "secp521r1")
_FFDHE_GROUPS = ("ffdhe2048", "ffdhe3072", "ffdhe4096")

# OpenSSL reasons raised by the local client before the server had a say.
_LOCAL_LIMITS = frozenset(
    {"NO_CIPHERS_AVAILABLE", "NO_PROTOCOLS_AVAILABLE", "NO_SUITABLE_KEY_SHARE"}
)

Outcome = Literal["accepted", "refused", "untestable"]


class ProbeError(ChatsecError):
    """The probe could not run to the end (unreachable, no TLS, a timeout): not a result."""


@dataclass(frozen=True)
class Suite:
    """A TLS 1.0-1.2 cipher suite as the local OpenSSL describes it."""

    name: str
    key_exchange: str  # OpenSSL's kea: kx-ecdhe, kx-dhe, kx-rsa, ...
    authentication: str  # auth-ecdsa, auth-rsa, auth-null, ...
    cipher: str | None  # aes-128-gcm, aes-256-cbc, ...; None for NULL encryption
    aead: bool

    @classmethod
    def from_openssl(cls, row: Mapping[str, object]) -> Suite:
        return cls(
            str(row["name"]),
            str(row["kea"]),
            str(row["auth"]),
            None if row["symmetric"] is None else str(row["symmetric"]),
            bool(row["aead"]),
        )

    def flaws(self) -> list[tuple[str, str]]:
        """(label, why) for each way the suite falls short of AEAD with forward secrecy."""
        out = []
        if self.cipher is None:
            out.append(("NULL cipher", "no encryption"))
        if self.authentication == "auth-null":
            out.append(("anonymous", "the server is not authenticated"))
        if self.key_exchange not in _FORWARD_SECRET_KEX:
            out.append(
                ("no forward secrecy", f"{self.key_exchange.removeprefix('kx-')} key exchange")
            )
        if self.cipher is not None and not self.aead:
            mode = "CBC" if self.cipher.endswith("-cbc") else self.cipher
            out.append((f"{mode}, not AEAD", self.cipher))
        if "CCM8" in self.name:
            out.append(("CCM_8", "a 64-bit authentication tag"))
        return out

    def weakness(self) -> tuple[Level, str] | None:
        """None for AEAD with forward secrecy (AES-GCM/CCM, ChaCha20); else its level and why."""
        flaws = self.flaws()
        if flaws:
            return "error", "; ".join(f"{label} ({why})" for label, why in flaws)
        if self.cipher is not None and not _EXPECTED_AEAD.match(self.cipher):
            # AEAD with forward secrecy, so not broken: outside what clients expect, though.
            return "warning", (
                f"{self.cipher}: AEAD with forward secrecy, but not AES-GCM, "
                "AES-CCM or ChaCha20-Poly1305 (NIST SP 800-52r2, Mozilla)"
            )
        return None


@dataclass(frozen=True)
class Attempt:
    """One handshake: accepted (with what), refused by the server, or not offerable here."""

    outcome: Outcome
    protocol: str | None = None
    cipher: str | None = None
    reason: str = ""


@dataclass
class VersionResult:
    version: Version
    outcome: Outcome
    detail: str  # the negotiated suite, or why refused / untestable
    suites_tried: list[str] = field(default_factory=list)
    suites_accepted: list[Suite] = field(default_factory=list)
    suites_untestable: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> bool:
        return self.outcome == "accepted"

    def to_json(self) -> dict[str, object]:
        return {
            "outcome": self.outcome,
            "detail": self.detail,
            "suites_tried": self.suites_tried,
            "suites_accepted": [s.name for s in self.suites_accepted],
            "suites_untestable": self.suites_untestable,
        }


@dataclass
class GroupResult:
    version: Version | None  # the version the groups were tried at
    accepted: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    untestable: list[str] = field(default_factory=list)
    note: str = ""  # why they were not tried, when they were not

    def to_json(self) -> dict[str, object]:
        return {
            "version": self.version,
            "accepted": self.accepted,
            "refused": self.refused,
            "untestable": self.untestable,
            "note": self.note,
        }


@dataclass
class ProbeResult:
    """Everything one probe found; `findings_for` turns it into findings."""

    endpoint: str
    openssl: str
    versions: list[VersionResult]
    groups: GroupResult
    server_order: bool | None  # True: the server's cipher order wins; None: not determined
    order_detail: str
    connections: int
    duration_s: float

    def to_json(self) -> dict[str, object]:
        return {
            "endpoint": self.endpoint,
            "openssl": self.openssl,
            "cipher_string": ALL_SUITES + _SECLEVEL_0,
            "versions": {v.version: v.to_json() for v in self.versions},
            "groups": self.groups.to_json(),
            "server_cipher_order": self.server_order,
            "server_cipher_order_detail": self.order_detail,
            "connections": self.connections,
            "duration_ms": round(self.duration_s * 1000, 1),
        }


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def ssl_request(host: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection on which the server has agreed to start TLS ('S' to the SSLRequest)."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        raise ProbeError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
    try:
        raw.sendall(SSL_REQUEST)
        answer = _recv_exact(raw, 1)
    except OSError as exc:
        raw.close()
        raise ProbeError(f"{host}:{port} did not answer the SSLRequest: {exc}") from None
    if answer != b"S":
        raw.close()
        if answer == b"N":
            raise ProbeError(
                f"{host}:{port} refuses TLS (answered 'N' to the SSLRequest: ssl = off)"
            )
        raise ProbeError(
            f"{host}:{port} is not a PostgreSQL server speaking TLS "
            f"(answer {answer!r} to the SSLRequest)"
        )
    return raw


def start_tls(
    host: str,
    port: int,
    context: ssl.SSLContext,
    server_hostname: str | None,
    timeout: float = PROBE_TIMEOUT_S,
) -> ssl.SSLSocket:
    """SSLRequest, then the handshake; ssl.SSLError when the handshake fails."""
    raw = ssl_request(host, port, timeout)
    try:
        return context.wrap_socket(raw, server_hostname=server_hostname)
    except BaseException:
        raw.close()
        raise


def client_context(
    version: ssl.TLSVersion, ciphers: str = ALL_SUITES, group: str | None = None
) -> ssl.SSLContext | None:
    """A client pinned to `version`, offering `ciphers` (and only `group`); None if it cannot."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    # Enumeration must see what the server accepts whatever its certificate; the chain and
    # host name have their own checks.
    ctx.verify_mode = ssl.CERT_NONE
    try:
        with warnings.catch_warnings():
            # TLSv1 and TLSv1.1 are deprecated in Python: trying them is the point.
            warnings.simplefilter("ignore", DeprecationWarning)
            ctx.minimum_version = version
            ctx.maximum_version = version
        ctx.set_ciphers(ciphers + _SECLEVEL_0)
        if group is not None:
            ctx.set_ecdh_curve(group)  # with OpenSSL 3: the only group offered
    except (ValueError, ssl.SSLError):
        return None
    return ctx


def known_suites(version: ssl.TLSVersion) -> list[Suite]:
    """The TLS 1.0-1.2 suites of the local OpenSSL a client can offer at `version` (PSK and
    SRP suites need credentials PostgreSQL never has)."""
    ctx = client_context(version)
    if ctx is None or version == ssl.TLSVersion.TLSv1_3:
        return []
    rank = 2 if version == ssl.TLSVersion.TLSv1_2 else 0
    return [
        Suite.from_openssl(row)
        for row in ctx.get_ciphers()
        if _SUITE_MIN_VERSION.get(str(row["protocol"]), 9) <= rank
        and row["kea"] not in _CREDENTIAL_KEX
    ]


def admitted_suites(cipher_string: str) -> list[Suite]:
    """The TLS 1.2 suites a server `ssl_ciphers` setting admits, as the local OpenSSL reads it.

    The server's OpenSSL security level is not known from outside: unless the string names
    its own @SECLEVEL, level 0 shows everything it could admit.
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    string = cipher_string if "@SECLEVEL" in cipher_string else cipher_string + _SECLEVEL_0
    try:
        ctx.set_ciphers(string)
    except ssl.SSLError:
        return []  # selects no TLS 1.2 suite at all: TLS 1.2 handshakes cannot succeed
    return [
        Suite.from_openssl(row)
        for row in ctx.get_ciphers()
        if str(row["protocol"]) != "TLSv1.3" and row["kea"] not in _CREDENTIAL_KEX
    ]


class _Prober:
    """Handshakes with one server, counting them; a timeout or lost network aborts."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.connections = 0
        self._count_lock = threading.Lock()

    def attempt_all(self, contexts: Sequence[ssl.SSLContext | None]) -> list[Attempt]:
        """One handshake per context, a few at a time, in the order given."""
        with ThreadPoolExecutor(max_workers=PROBE_PARALLEL) as pool:
            return list(pool.map(self.attempt, contexts))

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def attempt(self, context: ssl.SSLContext | None) -> Attempt:
        if context is None:
            return Attempt("untestable", reason="the local OpenSSL cannot offer it")
        raw = ssl_request(self.host, self.port, self.timeout)
        with self._count_lock:
            self.connections += 1
        try:
            with context.wrap_socket(raw, server_hostname=None) as tls:
                cipher = tls.cipher()
                return Attempt("accepted", tls.version(), cipher[0] if cipher else None)
        except ssl.SSLError as exc:
            reason = str(exc.reason or exc)
            if reason in _LOCAL_LIMITS:
                return Attempt("untestable", reason=f"the local OpenSSL cannot offer it ({reason})")
            return Attempt("refused", reason=reason)
        except TimeoutError:
            raise ProbeError(
                f"{self.endpoint}: a TLS handshake timed out after {self.timeout:g} s"
            ) from None
        except OSError as exc:
            # Hanging up on the ClientHello is how some servers refuse.
            return Attempt("refused", reason=exc.strerror or type(exc).__name__)
        finally:
            raw.close()

    def verify_identity(self, rootcert: Path | Literal["system"]) -> None:
        """Refuse to probe a server that cannot prove it is the audited one."""
        try:
            context = (
                ssl.create_default_context()
                if rootcert == "system"
                else ssl.create_default_context(cafile=str(rootcert))
            )
        except (OSError, ssl.SSLError) as exc:
            raise ProbeError(f"cannot load CA certificates from {rootcert}: {exc}") from None
        self.connections += 1
        try:
            start_tls(self.host, self.port, context, self.host, self.timeout).close()
        except ssl.SSLCertVerificationError as exc:
            raise ProbeError(
                f"{self.endpoint} did not prove its identity against {rootcert}: "
                f"{exc.verify_message or exc}"
            ) from None
        except ssl.SSLError as exc:
            raise ProbeError(
                f"TLS handshake with {self.endpoint} failed: {exc.reason or exc}"
            ) from None
        except TimeoutError:
            raise ProbeError(f"{self.endpoint}: the TLS handshake timed out") from None


def _version_result(name: Version, attempt: Attempt) -> VersionResult:
    if attempt.outcome != "accepted":
        return VersionResult(name, attempt.outcome, attempt.reason)
    return VersionResult(name, "accepted", f"negotiated {attempt.cipher}")


def _enumerate_suites(prober: _Prober, result: VersionResult, version: ssl.TLSVersion) -> None:
    """One handshake per suite the local OpenSSL can offer at `version`."""
    suites = known_suites(version)
    attempts = prober.attempt_all([client_context(version, s.name) for s in suites])
    for suite, attempt in zip(suites, attempts, strict=True):
        result.suites_tried.append(suite.name)
        if attempt.outcome == "accepted":
            result.suites_accepted.append(suite)
        elif attempt.outcome == "untestable":
            result.suites_untestable.append(suite.name)


def _probe_versions(prober: _Prober) -> list[VersionResult]:
    attempts = prober.attempt_all([client_context(version) for _, version in VERSIONS])
    results = [_version_result(name, a) for (name, _), a in zip(VERSIONS, attempts, strict=True)]
    for result, (_, version) in zip(results, VERSIONS, strict=True):
        # TLS 1.3 suites are all AEAD with (EC)DHE, and Python's ssl cannot pin them anyway.
        if result.accepted and version != ssl.TLSVersion.TLSv1_3:
            _enumerate_suites(prober, result, version)
    return results


def _probe_groups(prober: _Prober, versions: list[VersionResult]) -> GroupResult:
    best = next((v for v in reversed(versions) if v.accepted), None)
    if best is None:
        return GroupResult(None, note="no protocol version accepted")
    pinned = dict(VERSIONS)[best.version]
    candidates: tuple[str, ...]
    if best.version == "TLSv1.3":
        ciphers, candidates = ALL_SUITES, _EC_GROUPS + _FFDHE_GROUPS
    else:
        ecdhe = [s.name for s in best.suites_accepted if s.key_exchange == "kx-ecdhe"]
        if not ecdhe:
            return GroupResult(best.version, note=f"no ECDHE suite accepted at {best.version}")
        ciphers, candidates = ":".join(ecdhe), _EC_GROUPS
    result = GroupResult(best.version)
    attempts = prober.attempt_all([client_context(pinned, ciphers, g) for g in candidates])
    for group, attempt in zip(candidates, attempts, strict=True):
        {"accepted": result.accepted, "refused": result.refused, "untestable": result.untestable}[
            attempt.outcome
        ].append(group)
    return result


def _probe_order(prober: _Prober, versions: list[VersionResult]) -> tuple[bool | None, str]:
    """Offer two accepted suites in both orders: does the server's or the client's order win?"""
    below_13 = [v for v in versions if v.accepted and len(v.suites_accepted) >= 2]
    if not below_13:
        return None, "not determined: no version below TLSv1.3 with two accepted suites"
    target = below_13[-1]
    # A weak suite first, if there is one: that is the order a downgrade would use.
    first = next((s for s in target.suites_accepted if s.weakness()), target.suites_accepted[-1])
    second = next(s for s in target.suites_accepted if s != first)
    pinned = dict(VERSIONS)[target.version]
    attempts = prober.attempt_all(
        [
            client_context(pinned, f"{a.name}:{b.name}")
            for a, b in ((first, second), (second, first))
        ]
    )
    chosen = [a.cipher for a in attempts]
    if chosen[0] is not None and chosen[0] == chosen[1]:
        return True, f"{target.version}: the server chose {chosen[0]} in either client order"
    if chosen == [first.name, second.name]:
        return False, (
            f"{target.version}: the server follows the client's order (chose "
            f"{first.name} when offered first)"
        )
    return None, f"not determined: the server chose {chosen} for the two orders"


def probe_server(
    host: str,
    port: int,
    *,
    rootcert: Path | Literal["system"] | None = None,
    timeout: float = PROBE_TIMEOUT_S,
) -> ProbeResult:
    """Try every protocol version, then suites, groups and cipher order (see module doc).

    With `rootcert`, the server must first prove its identity (chain and host name) or the
    probe does not run. ProbeError when it cannot run to the end.
    """
    started = time.perf_counter()
    prober = _Prober(host, port, timeout)
    if rootcert is not None:
        prober.verify_identity(rootcert)
    versions = _probe_versions(prober)
    if not any(v.accepted for v in versions):
        refusals = "; ".join(f"{v.version}: {v.detail}" for v in versions)
        raise ProbeError(f"{prober.endpoint} accepted no TLS handshake ({refusals})")
    groups = _probe_groups(prober, versions)
    order, order_detail = _probe_order(prober, versions)
    return ProbeResult(
        prober.endpoint,
        ssl.OPENSSL_VERSION,
        versions,
        groups,
        order,
        order_detail,
        prober.connections,
        time.perf_counter() - started,
    )


def version_findings(result: ProbeResult, check: Check) -> list[Finding]:
    """TLSv1/TLSv1.1 accepted: error; TLSv1.3 refused: warning; what was tried: info."""
    out = []
    for v in result.versions:
        where = f"{result.endpoint} {v.version}"
        if v.accepted and v.version in DEPRECATED_VERSIONS:
            out.append(
                check.finding(
                    where,
                    f"the server accepts {v.version} ({v.detail}): "
                    "deprecated by RFC 8996, and it has no AEAD suites",
                    level="error",
                    remediation=VERSION_FIX,
                )
            )
        elif v.version == "TLSv1.3" and v.outcome == "refused":
            out.append(
                check.finding(
                    where,
                    f"the server refuses TLSv1.3 ({v.detail})",
                    level="warning",
                    remediation="ssl_max_protocol_version = '' (no maximum)",
                )
            )
        elif v.outcome == "untestable":
            out.append(
                check.finding(
                    where,
                    f"not tried: {v.detail} ({result.openssl}); the audit's "
                    "tls-cipher-settings reads the setting instead",
                    level="info",
                    remediation=_NOTHING_TO_FIX,
                )
            )
    summary = ", ".join(f"{v.version} {v.outcome}" for v in result.versions)
    out.append(
        check.finding(
            result.endpoint,
            f"one handshake pinned to each version: {summary}",
            level="info",
            remediation=_NOTHING_TO_FIX,
        )
    )
    return out


def suite_findings(result: ProbeResult, check: Check) -> list[Finding]:
    """Every accepted suite that is not AEAD with forward secrecy, plus what was tried: info."""
    out = []
    for v in result.versions:
        if not v.accepted:
            continue
        where = f"{result.endpoint} {v.version}"
        if v.version == "TLSv1.3":
            out.append(
                check.finding(
                    where,
                    f"{v.detail}; TLS 1.3 suites are all AEAD with "
                    "(EC)DHE and are not enumerated (Python's ssl cannot offer "
                    "them one by one)",
                    level="info",
                    remediation=_NOTHING_TO_FIX,
                )
            )
            continue
        for suite in v.suites_accepted:
            weakness = suite.weakness()
            if weakness is not None:
                level, why = weakness
                out.append(
                    check.finding(
                        f"{where} {suite.name}",
                        f"the server accepts {suite.name} over {v.version}: {why}",
                        level=level,
                        remediation=CIPHERS_FIX,
                    )
                )
        accepted = ", ".join(s.name for s in v.suites_accepted) or "none"
        untestable = (
            f"; {len(v.suites_untestable)} could not be offered locally: "
            f"{', '.join(v.suites_untestable)}"
            if v.suites_untestable
            else ""
        )
        out.append(
            check.finding(
                where,
                f"tried each of the {len(v.suites_tried)} suites "
                f"{result.openssl} offers for {v.version} with "
                f"'{ALL_SUITES}{_SECLEVEL_0}' (PSK and SRP suites excluded: "
                f"PostgreSQL has no such credentials), one handshake each; "
                f"accepted {len(v.suites_accepted)}: {accepted}{untestable}",
                level="info",
                remediation=_NOTHING_TO_FIX,
            )
        )
    g = result.groups
    if g.version is None or g.note:
        groups = f"key-exchange groups not tried: {g.note}"
    else:
        groups = (
            f"key-exchange groups at {g.version}, one handshake each: accepted "
            f"{', '.join(g.accepted) or 'none of those tried'}; refused "
            f"{', '.join(g.refused) or 'none'}"
        )
        if g.untestable:
            groups += f"; not offerable locally: {', '.join(g.untestable)}"
    out.append(check.finding(result.endpoint, groups, level="info", remediation=_NOTHING_TO_FIX))
    out.append(
        check.finding(
            result.endpoint,
            f"cipher order: {result.order_detail}",
            level="info",
            remediation=_NOTHING_TO_FIX,
        )
    )
    return out


def findings_for(result: ProbeResult, check: Check) -> list[Finding]:
    return version_findings(result, check) + suite_findings(result, check)
