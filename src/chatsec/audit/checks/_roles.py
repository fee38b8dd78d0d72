"""Roles and memberships as PostgreSQL grants them, for the checks that ask who can do what."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from chatsec.audit.context import APP_ROLE, DEFINER_ROLE, OWNER_ROLE, AuditContext
from chatsec.identity.manage import IDENTITY_ROLE

ROTATOR_ROLE = "chat_key_rotator"
# Declared roles only the migrator (the chat database's owner) belongs to: it acts as them
# with SET ROLE. policies/roles.toml says so for each; logins join the other declared roles.
MIGRATOR_GROUPS = frozenset({OWNER_ROLE, DEFINER_ROLE, ROTATOR_ROLE, IDENTITY_ROLE})
PUBLIC = "PUBLIC"

_ROLES = """
SELECT rolname, rolcanlogin, rolsuper, rolbypassrls FROM pg_catalog.pg_roles ORDER BY 1
"""
_MEMBERSHIPS = """
SELECT r.rolname, g.rolname
  FROM pg_catalog.pg_auth_members m
  JOIN pg_catalog.pg_roles r ON r.oid = m.member
  JOIN pg_catalog.pg_roles g ON g.oid = m.roleid
"""
_DATABASE_OWNER = """
SELECT pg_catalog.pg_get_userbyid(datdba) FROM pg_catalog.pg_database
 WHERE datname = pg_catalog.current_database()
"""


@dataclass(frozen=True)
class Role:
    name: str
    login: bool
    superuser: bool
    bypassrls: bool


@dataclass
class RoleGraph:
    """Every role and whom it was granted to; membership counts with or without INHERIT,
    because a member may always SET ROLE to the group (PostgreSQL 15)."""

    roles: dict[str, Role]
    groups: dict[str, set[str]] = field(default_factory=dict)  # member -> groups granted to it

    @classmethod
    def read(cls, ctx: AuditContext) -> RoleGraph:
        roles = {
            str(name): Role(str(name), bool(login), bool(su), bool(bypass))
            for name, login, su, bypass in ctx.conn.execute(_ROLES).fetchall()
        }
        graph = cls(roles)
        for member, group in ctx.conn.execute(_MEMBERSHIPS).fetchall():
            graph.groups.setdefault(str(member), set()).add(str(group))
        return graph

    def chains(self, role: str) -> dict[str, list[str]]:
        """Every role `role` belongs to, with the shortest chain of grants to it."""
        found: dict[str, list[str]] = {}
        queue = deque([(role, list[str]())])
        while queue:
            current, chain = queue.popleft()
            for group in sorted(self.groups.get(current, ())):
                if group not in found and group != role:
                    found[group] = [*chain, group]
                    queue.append((group, found[group]))
        return found

    def members(self, group: str) -> set[str]:
        """`group` and every role that belongs to it, directly or not."""
        return {group} | {r for r in self.roles if group in self.chains(r)}

    def app_roles(self) -> set[str]:
        """app_user and its members: what the application's logins can do."""
        return self.members(APP_ROLE) if APP_ROLE in self.roles else set()

    def how(self, role: str, grantee: str) -> str | None:
        """How `role` holds what was granted to `grantee`; None when it does not."""
        if grantee == PUBLIC:
            return "through PUBLIC"
        if grantee == role:
            return "granted directly"
        chain = self.chains(role).get(grantee)
        return None if chain is None else "through membership in " + " -> ".join(chain)


def database_owner(ctx: AuditContext) -> str:
    return str(ctx.scalar(_DATABASE_OWNER))
