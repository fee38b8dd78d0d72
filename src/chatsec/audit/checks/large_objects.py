"""No storage outside row-level security: no large object, no large-object function for PUBLIC."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.checks._roles import RoleGraph
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.ops.harden import public_large_object_functions

# Owners and counts only (pg_largeobject_metadata): the content is never read.
_LARGE_OBJECTS = """
SELECT pg_catalog.pg_get_userbyid(lomowner), count(*)
  FROM pg_catalog.pg_largeobject_metadata GROUP BY 1 ORDER BY 1
"""
# The same functions harden-database closes, executable by a given role all the same.
_EXECUTABLE_BY = """
SELECT p.oid::pg_catalog.regprocedure::text
  FROM pg_catalog.pg_proc p
 WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
   AND (p.proname LIKE 'lo\\_%%' OR p.proname IN ('loread', 'lowrite'))
   AND pg_catalog.has_function_privilege(%s, p.oid, 'EXECUTE')
 ORDER BY 1
"""
_HARDEN = "chatsec harden-database (as a superuser)"


def _shown(functions: list[str]) -> str:
    return ", ".join(functions[:6]) + (
        f" (+{len(functions) - 6} more)" if len(functions) > 6 else ""
    )


def _stored(ctx: AuditContext) -> list[Finding]:
    owners = [(str(o), int(str(n))) for o, n in ctx.conn.execute(_LARGE_OBJECTS).fetchall()]
    if not owners:
        return []
    total = sum(n for _, n in owners)
    by_owner = ", ".join(f"{owner} ({n})" for owner, n in owners)
    return [
        CHECK.finding(
            "large objects",
            f"{total} large object(s) stored, owned by {by_owner}: large objects "
            "live outside every table, so outside row-level security and the encryption trigger",
            remediation="find out who stored them and why; SELECT pg_catalog.lo_unlink(oid) FROM "
            "pg_catalog.pg_largeobject_metadata once they are no longer needed",
        )
    ]


def _executable(ctx: AuditContext) -> list[Finding]:
    public = public_large_object_functions(ctx.conn)
    out = []
    if public:
        out.append(
            CHECK.finding(
                "large-object functions to PUBLIC",
                f"PUBLIC may execute {len(public)} "
                f"large-object function(s): {_shown(public)}; any login, the application's "
                "included, can store data outside row-level security",
                remediation=_HARDEN,
            )
        )
    # A grant to app_user or one of its logins is as bad as one to PUBLIC.
    graph = RoleGraph.read(ctx)
    for role in sorted(graph.app_roles()):
        granted = [f for f in _executable_by(ctx, role) if f not in public]
        if granted:
            out.append(
                CHECK.finding(
                    f"large-object functions to {role}",
                    f"{role} may execute {len(granted)} "
                    f"large-object function(s) beyond PUBLIC's: {_shown(granted)}",
                    remediation=f'REVOKE EXECUTE ON FUNCTION ... FROM "{role}"',
                )
            )
    return out


def _executable_by(ctx: AuditContext, role: str) -> list[str]:
    return [str(r[0]) for r in ctx.conn.execute(_EXECUTABLE_BY, (role,)).fetchall()]


def _run(ctx: AuditContext) -> list[Finding]:
    return _stored(ctx) + _executable(ctx)


CHECK = Check(
    id="large-objects",
    title="No data stored outside row-level security",
    category="privileges",
    level="error",
    description="Large objects in the database (pg_largeobject_metadata: count and owners, "
    "never their content), and the large-object functions (pg_catalog lo_*, loread, "
    "lowrite) executable by PUBLIC, app_user or its logins. Needs: catalog read.",
    remediation=_HARDEN,
    run=_run,
)
