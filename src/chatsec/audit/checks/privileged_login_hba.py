"""Superuser and BYPASSRLS logins may connect through the local socket only (pg_hba.conf)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from chatsec.audit.check import Check
from chatsec.audit.checks._hba import HBA_PRIVILEGE, require_hba_rules
from chatsec.audit.checks._roles import RoleGraph
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

_RULES = """
SELECT line_number, type, database, user_name, address, netmask, auth_method
  FROM pg_catalog.pg_hba_file_rules WHERE error IS NULL ORDER BY line_number
"""
# Which connections a TCP line's type matches: TLS, plaintext, GSSAPI-encrypted.
_TRANSPORTS = {
    "host": {"ssl", "plain", "gss"},
    "hostssl": {"ssl"},
    "hostnossl": {"plain", "gss"},
    "hostgssenc": {"gss"},
    "hostnogssenc": {"ssl", "plain"},
}
# The whole IPv4 / IPv6 address space, as pg_hba_file_rules shows 0.0.0.0/0 and ::/0.
_EVERYWHERE = {("0.0.0." + "0", "0.0.0." + "0"): "v4", ("::", "::"): "v6"}

Connection = tuple[str, str, str]  # (normal or replication, v4 or v6, transport)


@dataclass(frozen=True)
class Rule:
    line: int
    kind: str
    databases: list[str]
    users: list[str]
    address: str | None
    netmask: str | None
    method: str

    @property
    def text(self) -> str:
        """The line as pg_hba_file_rules gives it back."""
        where = self.address or ""
        if self.netmask:
            where += f" {self.netmask}"
        return " ".join(
            p
            for p in (self.kind, ",".join(self.databases), ",".join(self.users), where, self.method)
            if p
        )

    def families(self, whole: bool) -> set[str]:
        """The address families this line matches (every address of, when `whole`)."""
        if self.address == "all":
            return {"v4", "v6"}
        family = _EVERYWHERE.get((self.address or "", self.netmask or ""))
        if family:
            return {family}
        if whole:
            return set()
        try:
            return {"v6" if ipaddress.ip_address(self.address or "").version == 6 else "v4"}
        except ValueError:
            return {"v4", "v6"}  # samehost, samenet or a host name

    def connections(self, whole: bool = False) -> set[Connection]:
        """The connections this line matches (all of whose kind, when `whole`)."""
        classes = {"replication"} if "replication" in self.databases else set()
        if "all" in self.databases or (not whole and set(self.databases) - {"replication"}):
            classes.add("normal")
        return {
            (c, f, t)
            for c in classes
            for f in self.families(whole)
            for t in _TRANSPORTS.get(self.kind, set())
        }


def _names(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _rules(ctx: AuditContext) -> list[Rule]:
    return [
        Rule(
            int(str(line)),
            str(kind),
            _names(dbs),
            _names(users),
            None if address is None else str(address),
            None if netmask is None else str(netmask),
            str(method),
        )
        for line, kind, dbs, users, address, netmask, method in ctx.conn.execute(_RULES)
    ]


def _matches(graph: RoleGraph, users: Iterable[str], login: str) -> bool:
    # "+group" matches members only: a superuser is not implicitly a member here.
    groups = graph.chains(login)
    return any(u in {"all", login} or (u.startswith("+") and u[1:] in groups) for u in users)


def _run(ctx: AuditContext) -> list[Finding]:
    require_hba_rules(ctx)
    graph = RoleGraph.read(ctx)
    privileged = {
        r.name: ("superuser" if r.superuser else "BYPASSRLS")
        for r in graph.roles.values()
        if r.login and (r.superuser or r.bypassrls)
    }
    # pg_hba.conf is first-match: after a reject that covers every address of a family
    # for a login, later lines never see that login's connections of that family.
    rejected: dict[str, set[Connection]] = {login: set() for login in privileged}
    out = []
    for rule in _rules(ctx):
        if rule.kind not in _TRANSPORTS:
            continue  # local: the Unix socket is what we want
        for login, power in sorted(privileged.items()):
            if not _matches(graph, rule.users, login):
                continue
            if rule.method == "reject":
                rejected[login] |= rule.connections(whole=True)
                continue
            if rule.connections() <= rejected[login]:
                continue
            out.append(
                CHECK.finding(
                    f"{login} by pg_hba.conf line {rule.line}",
                    f"{login} ({power}) may connect over TCP: line {rule.line} "
                    f"'{rule.text}' (type {rule.kind}, database {','.join(rule.databases)}, user "
                    f"{','.join(rule.users)}, address {rule.address}, netmask {rule.netmask}, "
                    f"auth {rule.method}); a stolen password then works from the network",
                    remediation=f"before line {rule.line}: 'host all {login} 0.0.0.0/0 reject' and "
                    f"'host all {login} ::/0 reject'; connect as {login} through the "
                    "local socket only",
                )
            )
    return out


CHECK = Check(
    id="privileged-login-hba",
    title="Superuser and BYPASSRLS logins only through the local socket",
    category="privileges",
    level="warning",
    description="pg_hba_file_rules, first-match aware: every host/hostssl/hostnossl/hostgssenc "
    "line that lets a SUPERUSER or BYPASSRLS login connect (user all, its name or "
    "+group of a role it belongs to), not shadowed by an earlier reject covering "
    "that login from every address of the family, is a warning naming the login and "
    "the exact line (number, type, database, user, address, netmask, method). "
    "Needs: " + HBA_PRIVILEGE.removeprefix("needs ") + "; skipped otherwise.",
    remediation="reject the login over TCP in pg_hba.conf; connect through the local socket",
    run=_run,
)
