"""The server's TLS settings: protocol range, ssl_ciphers, ssl_ecdh_curve and cipher order."""

from __future__ import annotations

import re

from chatsec.audit.check import Check, Skip
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding, Level
from chatsec.audit.tls_probe import (
    CIPHERS_FIX,
    DEPRECATED_VERSIONS,
    VERSION_FIX,
    Suite,
    admitted_suites,
)

_ORDER = {"TLSv1": 1, "TLSv1.1": 2, "TLSv1.2": 3, "TLSv1.3": 4}
# Superuser-only unless the login has pg_read_all_settings: hidden from pg_settings otherwise.
_NEEDED = (
    "ssl_ciphers",
    "ssl_prefer_server_ciphers",
    "ssl_min_protocol_version",
    "ssl_max_protocol_version",
)
# PostgreSQL 18 renamed ssl_ecdh_curve to ssl_groups (a list).
_GROUP_SETTINGS = ("ssl_groups", "ssl_ecdh_curve")
_EC_CURVE_BITS = re.compile(r"^(?:secp|sect|prime|brainpoolP)(\d+)")
# What the suites a weakness level gathers have in common.
_WEAK_KINDS: tuple[tuple[Level, str], ...] = (
    ("error", "are not AEAD with forward secrecy"),
    ("warning", "are AEAD with forward secrecy but not AES-GCM, AES-CCM or ChaCha20"),
)


def allowed_versions(minimum: str, maximum: str) -> list[str]:
    """The protocol versions between the two settings ('' is no bound)."""
    low, high = _ORDER.get(minimum, 1), _ORDER.get(maximum, 4)
    return [v for v, rank in _ORDER.items() if low <= rank <= high]


def _grouped(suites: list[Suite]) -> str:
    """Suite names grouped by their most serious flaw (their cipher, for AEAD ones)."""
    groups: dict[str, list[str]] = {}
    for suite in suites:
        flaws = suite.flaws()
        groups.setdefault(flaws[0][0] if flaws else str(suite.cipher), []).append(suite.name)
    return "; ".join(f"{label}: {', '.join(names)}" for label, names in groups.items())


def _protocol_findings(minimum: str, maximum: str, allowed: list[str]) -> list[Finding]:
    setting = f"ssl_min_protocol_version = '{minimum}', ssl_max_protocol_version = '{maximum}'"
    if not allowed:
        return [
            CHECK.finding(
                "setting ssl_min_protocol_version",
                f"{setting}: no protocol version is allowed, TLS cannot start",
                remediation=VERSION_FIX,
            )
        ]
    out = []
    old = [v for v in allowed if v in DEPRECATED_VERSIONS]
    if old:
        out.append(
            CHECK.finding(
                "setting ssl_min_protocol_version",
                f"{setting} allows {', '.join(old)}: deprecated by RFC 8996",
                remediation=VERSION_FIX,
            )
        )
    if "TLSv1.3" not in allowed:
        out.append(
            CHECK.finding(
                "setting ssl_max_protocol_version",
                f"{setting} refuses TLSv1.3",
                level="warning",
                remediation="ssl_max_protocol_version = '' (no maximum)",
            )
        )
    return out


def _cipher_findings(ciphers: str, allowed: list[str]) -> list[Finding]:
    weak: dict[Level, list[Suite]] = {"error": [], "warning": []}
    for suite in admitted_suites(ciphers):
        weakness = suite.weakness()
        if weakness is not None:
            weak[weakness[0]].append(suite)
    below_13 = [v for v in allowed if v != "TLSv1.3"]
    if not below_13:
        count = len(weak["error"]) + len(weak["warning"])
        if not count:
            return []
        return [
            CHECK.finding(
                "setting ssl_ciphers",
                f"ssl_ciphers = '{ciphers}' admits {count} suite(s) that are not AEAD with "
                "forward secrecy over AES-GCM, AES-CCM or ChaCha20; harmless while only TLSv1.3 "
                "is allowed (ssl_ciphers has no say in TLS 1.3), in force again if the minimum "
                "is lowered",
                level="info",
                remediation=CIPHERS_FIX,
            )
        ]
    out = []
    for level, what in _WEAK_KINDS:
        if weak[level]:
            out.append(
                CHECK.finding(
                    "setting ssl_ciphers",
                    f"ssl_ciphers = '{ciphers}' admits {len(weak[level])} suite(s) that {what}, "
                    f"and {', '.join(below_13)} is allowed. {_grouped(weak[level])}. The "
                    "server's certificate key type decides which it can use; "
                    "tls-cipher-suites shows those it accepts",
                    level=level,
                    remediation=CIPHERS_FIX,
                )
            )
    return out


def _curve_findings(settings: dict[str, str], name: str) -> list[Finding]:
    out = []
    for group in re.split(r"[:,]", settings[name]):
        match = _EC_CURVE_BITS.match(group.strip())
        if match and int(match.group(1)) < 256:
            out.append(
                CHECK.finding(
                    f"setting {name}",
                    f"{group.strip()}: a {match.group(1)}-bit curve, under 128-bit security",
                    remediation=f"{name} = 'prime256v1'",
                )
            )
    return out


def _run(ctx: AuditContext) -> list[Finding]:
    settings = ctx.settings
    if settings.get("ssl") != "on":
        raise Skip(f"ssl = {settings.get('ssl')}: no TLS settings to assess (ssl-on reports it)")
    hidden = [n for n in _NEEDED if n not in settings]
    curve_setting = next((n for n in _GROUP_SETTINGS if n in settings), None)
    if curve_setting is None:
        hidden.append(_GROUP_SETTINGS[-1])
    if hidden or curve_setting is None:
        raise Skip(f"needs pg_read_all_settings to read {', '.join(hidden)}")
    minimum = settings["ssl_min_protocol_version"]
    maximum = settings["ssl_max_protocol_version"]
    allowed = allowed_versions(minimum, maximum)
    out = _protocol_findings(minimum, maximum, allowed)
    out += _cipher_findings(settings["ssl_ciphers"], allowed)
    if settings["ssl_prefer_server_ciphers"] != "on":
        out.append(
            CHECK.finding(
                "setting ssl_prefer_server_ciphers",
                "off: the client's cipher order wins, so a client (or a "
                "downgrade) that lists a weak suite first gets it",
                level="warning",
                remediation="ssl_prefer_server_ciphers = on",
            )
        )
    return out + _curve_findings(settings, curve_setting)


CHECK = Check(
    id="tls-cipher-settings",
    title="TLS settings admit only AEAD suites with forward secrecy",
    category="server",
    level="error",
    description="ssl_min/max_protocol_version, ssl_ciphers (expanded by the local OpenSSL, "
    "@SECLEVEL=0 unless it names one), ssl_prefer_server_ciphers and ssl_ecdh_curve: "
    "TLSv1/TLSv1.1 allowed, TLSv1.2 allowed while ssl_ciphers admits a suite that is "
    "not ECDHE/DHE with AES-GCM, AES-CCM (not CCM_8) or ChaCha20-Poly1305, or a curve "
    "under 256 bits: error; ARIA-GCM admitted, ssl_prefer_server_ciphers off or "
    "TLSv1.3 refused: warning. Needs: pg_read_all_settings (ssl_ciphers is "
    "superuser-only).",
    remediation=CIPHERS_FIX,
    run=_run,
)
