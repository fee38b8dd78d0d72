"""pg_hba.conf (read over SQL): no non-TLS TCP line that accepts, no trust for TCP."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.checks._hba import HBA_PRIVILEGE, require_hba_rules
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

_RULES = """
SELECT line_number, type, database, user_name, address, netmask, auth_method, error
  FROM pg_catalog.pg_hba_file_rules ORDER BY line_number
"""


# 0.0.0.0/0 as pg_hba_file_rules shows it: address and netmask both zero.
_ANY_V4 = "0.0.0." + "0"


def _names(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _covers_all(rule_dbs: object, rule_users: object) -> bool:
    return _names(rule_dbs) == ["all"] and _names(rule_users) == ["all"]


def _families(address: object, netmask: object) -> set[str]:
    """Which address families a line matches every address of (for shadowing rejects)."""
    if address == "all":
        return {"v4", "v6"}
    if address == netmask == _ANY_V4:
        return {"v4"}
    if address == "::" and netmask == "::":
        return {"v6"}
    return set()


def _run(ctx: AuditContext) -> list[Finding]:
    require_hba_rules(ctx)
    out = []
    # pg_hba.conf is first-match: once a reject covers every database, user and address
    # of a family for non-TLS connections, later lines never see such a connection.
    rejected: set[str] = set()
    for line, kind, dbs, users, address, netmask, method, error in ctx.conn.execute(
        _RULES
    ).fetchall():
        where = f"pg_hba.conf line {line}"
        text = f"{kind} {' '.join(_names(dbs))} {' '.join(_names(users))} {address or ''} {method}"
        if error:
            out.append(CHECK.finding(where, f"unparsable line: {error}", level="warning",
                                     remediation="fix the line; the server ignores the file "
                                                 "until it parses"))
            continue
        if kind == "local":
            if method == "trust":
                out.append(CHECK.finding(where, f"{text.strip()}: any local OS user may connect "
                                         "as any role without a password", level="warning",
                                         remediation="use peer or scram-sha-256 for local"))
            continue
        if method == "trust":
            out.append(CHECK.finding(where, f"{text.strip()}: TCP connections without any "
                                     "authentication", remediation="scram-sha-256, never trust"))
        elif method in {"password", "md5"}:
            out.append(CHECK.finding(where, f"{text.strip()}: {method} authentication",
                                     level="error" if method == "password" else "warning",
                                     remediation="scram-sha-256"))
        if kind in {"host", "hostnossl"}:
            families = _families(address, netmask)
            if method == "reject":
                if _covers_all(dbs, users):
                    rejected |= families
                continue
            line_families = families or {"v4", "v6"}
            if line_families <= rejected:
                continue  # shadowed by an earlier catch-all reject
            out.append(CHECK.finding(
                where, f"{text.strip()}: accepts TCP connections without TLS"
                + (" (host matches both TLS and non-TLS)" if kind == "host" else ""),
                remediation="use hostssl for this line and end the file with "
                            "'hostnossl all all 0.0.0.0/0 reject' and '... ::/0 reject'"))
    return out


CHECK = Check(
    id="hba-rules",
    title="pg_hba.conf: TLS only for TCP, no trust",
    category="server",
    level="error",
    description="pg_hba_file_rules, first-match aware: an accepting host/hostnossl line not "
                "shadowed by a catch-all reject, trust or password for TCP (error), md5 and local "
                "trust (warning). Needs: " + HBA_PRIVILEGE.removeprefix("needs ") + "; skipped "
                "otherwise.",
    remediation="hostssl lines with scram-sha-256; hostnossl ... reject",
    run=_run,
)
