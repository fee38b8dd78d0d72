"""app_user and its logins: no superuser, BYPASSRLS, CREATEROLE, CREATEDB; no owner; own nothing."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import APP_ROLE, DEFINER_ROLE, OWNER_ROLE, AuditContext
from chatsec.audit.finding import Finding

# app_user and every role that is (transitively) a member of it: a login's own
# attributes matter as much as the group's. pg_has_role() is not used because it
# is true for superusers on every role.
_ROLES = """
WITH RECURSIVE members(oid) AS (
    SELECT oid FROM pg_catalog.pg_roles WHERE rolname = %s
  UNION
    SELECT m.member FROM pg_catalog.pg_auth_members m JOIN members ON m.roleid = members.oid
)
SELECT r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole, r.rolcreatedb, r.rolreplication
  FROM pg_catalog.pg_roles r JOIN members USING (oid)
 ORDER BY 1
"""
# Everything chat_owner can do, the role can do too when it is a member (SET ROLE).
_OWNER_MEMBERS = """
WITH RECURSIVE granted(oid) AS (
    SELECT roleid FROM pg_catalog.pg_auth_members WHERE member = %s::regrole
  UNION
    SELECT m.roleid FROM pg_catalog.pg_auth_members m JOIN granted ON m.member = granted.oid
)
SELECT EXISTS (SELECT 1 FROM granted WHERE oid = %s::regrole)
"""
_OWNED = """
SELECT kind, name FROM (
  SELECT 'relation' AS kind, c.oid::regclass::text AS name, c.relowner AS owner
    FROM pg_catalog.pg_class c
  UNION ALL SELECT 'function', p.oid::regprocedure::text, p.proowner FROM pg_catalog.pg_proc p
  UNION ALL SELECT 'schema', n.nspname::text, n.nspowner FROM pg_catalog.pg_namespace n
  UNION ALL SELECT 'type', t.oid::regtype::text, t.typowner FROM pg_catalog.pg_type t
  UNION ALL SELECT 'database', d.datname::text, d.datdba FROM pg_catalog.pg_database d
 ) o
 WHERE o.owner = %s::regrole
 ORDER BY 1, 2
 LIMIT 20
"""
_ATTRS = (("superuser", "NOSUPERUSER"), ("BYPASSRLS", "NOBYPASSRLS"),
          ("CREATEROLE", "NOCREATEROLE"), ("CREATEDB", "NOCREATEDB"),
          ("REPLICATION", "NOREPLICATION"))


def _run(ctx: AuditContext) -> list[Finding]:
    rows = ctx.conn.execute(_ROLES, (APP_ROLE,)).fetchall()
    if not rows:
        return [CHECK.finding(APP_ROLE, "role app_user does not exist",
                              remediation="deploy: chatsec deploy")]
    out = []
    for name, *flags in rows:
        role = str(name)
        for (attr, fix), on in zip(_ATTRS, flags, strict=True):
            if on:
                out.append(CHECK.finding(
                    role, f"{role} has {attr}" + (" (row level security does not apply to it)"
                                                  if attr == "BYPASSRLS" else ""),
                    remediation=f'ALTER ROLE "{role}" {fix}'))
        for owner, owns in ((OWNER_ROLE, "every chat table"),
                            (DEFINER_ROLE, "the SECURITY DEFINER helpers")):
            if ctx.scalar(_OWNER_MEMBERS, (role, owner)):
                out.append(CHECK.finding(
                    role, f"{role} is a member of {owner}: it can SET ROLE to the owner of "
                    f"{owns} and change or bypass the policies",
                    remediation=f'REVOKE "{owner}" FROM "{role}"'))
        for kind, obj in ctx.conn.execute(_OWNED, (role,)).fetchall():
            out.append(CHECK.finding(
                role, f"{role} owns {kind} {obj}: an owner may alter, disable RLS on, or drop it",
                remediation=f'REASSIGN OWNED BY "{role}" TO "{OWNER_ROLE}" (in each database)'))
    return out


CHECK = Check(
    id="app-user-attributes",
    title="app_user cannot escape the policies",
    category="privileges",
    level="error",
    description="app_user and its member logins: no SUPERUSER, BYPASSRLS, CREATEROLE, CREATEDB "
                "or REPLICATION; not a member of chat_owner or chat_definer; owning nothing in "
                "this database "
                "(databases cluster-wide). Needs: catalog read.",
    remediation="ALTER ROLE ... NOBYPASSRLS etc.",
    run=_run,
)
