"""Who can create temporary objects, schemas, or objects in any schema of the chat database."""

from __future__ import annotations

from dataclasses import dataclass

from chatsec.audit.check import Check
from chatsec.audit.checks._roles import PUBLIC, RoleGraph
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

# Every TEMPORARY / CREATE entry of the effective ACLs (NULL is the built-in default, which
# gives PUBLIC TEMPORARY on a database). The owner's own entry is left out: ownership is
# objects-match's, app-user-attributes' and undeclared-logins' business, not a grant.
_ENTRIES = """
SELECT 'database', d.datname, a.privilege_type,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END
  FROM pg_catalog.pg_database d,
       pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
 WHERE d.datname = pg_catalog.current_database()
   AND a.privilege_type IN ('CREATE', 'TEMPORARY') AND a.grantee <> d.datdba
UNION ALL
SELECT 'schema', n.nspname, a.privilege_type,
       CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_catalog.pg_get_userbyid(a.grantee) END
  FROM pg_catalog.pg_namespace n,
       pg_catalog.aclexplode(coalesce(n.nspacl, pg_catalog.acldefault('n', n.nspowner))) a
 WHERE a.privilege_type = 'CREATE' AND a.grantee <> n.nspowner
   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
 ORDER BY 1, 2, 3, 4
"""


@dataclass(frozen=True)
class Entry:
    """One ACL entry that lets its grantee create something."""

    kind: str  # database or schema
    name: str
    privilege: str  # CREATE or TEMPORARY
    grantee: str  # a role name or PUBLIC

    @property
    def target(self) -> str:
        return f'{self.kind} "{self.name}"'

    @property
    def ability(self) -> str:
        if self.privilege == "TEMPORARY":
            return f"create temporary objects (TEMPORARY on {self.target})"
        if self.kind == "database":
            return f"create schemas (CREATE on {self.target})"
        return f"create objects in {self.target} (CREATE)"

    def declared(self, ctx: AuditContext) -> bool:
        """policies/schemas.toml grants it (chat_auditor's TEMPORARY, for one)."""
        if self.kind == "database":
            grants = ctx.declared.database or {}
        else:
            schema = ctx.declared.schemas.get(self.name)
            grants = schema.grants if schema else {}
        return self.privilege in grants.get(self.grantee, frozenset())


def _entries(ctx: AuditContext) -> list[Entry]:
    return [Entry(str(k), str(n), str(p), str(g)) for k, n, p, g in ctx.conn.execute(_ENTRIES)]


def _run(ctx: AuditContext) -> list[Finding]:
    graph = RoleGraph.read(ctx)
    app_roles = graph.app_roles()
    out = []
    for entry in _entries(ctx):
        for role in sorted(r.name for r in graph.roles.values() if not r.superuser):
            how = graph.how(role, entry.grantee)
            if how is None:
                continue
            app = role in app_roles
            # PUBLIC reaches every role: it is reported for the application's roles, which
            # is what makes it an error, not once more for every other role.
            if not app and (entry.grantee == PUBLIC or entry.declared(ctx)):
                continue
            why = (
                "a member of app_user: an object it creates outlives the request on a pooled "
                "connection (docs/threat-model.md)"
                if app
                else "not declared in policies/"
            )
            out.append(
                CHECK.finding(
                    role,
                    f"{role} can {entry.ability}, {how}; {why}",
                    level="error" if app else "warning",
                    remediation=f"REVOKE {entry.privilege} ON {entry.target} FROM "
                    + ("PUBLIC" if entry.grantee == PUBLIC else f'"{entry.grantee}"'),
                )
            )
    return out


CHECK = Check(
    id="create-privileges",
    title="Nobody but the owners can create objects or temporary objects",
    category="privileges",
    level="error",
    description="Every non-superuser role that can create temporary objects (TEMPORARY on the "
    "database) or create in the database or any of its schemas, through PUBLIC, a "
    "direct grant or membership (SET ROLE counts): an error for app_user and its "
    "members, a warning for other roles unless policies/schemas.toml grants it "
    "(chat_auditor's TEMPORARY). Owners and their members are not listed. Needs: "
    "catalog read.",
    remediation="REVOKE TEMPORARY / CREATE ... FROM the grantee",
    run=_run,
)
