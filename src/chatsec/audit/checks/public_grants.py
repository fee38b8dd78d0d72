"""Nothing granted to PUBLIC: not on chat objects, not on the database."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.checks.definer_public_execute import definer_identities
from chatsec.audit.context import AuditContext
from chatsec.audit.diffmap import GRANT_KINDS, findings_from, grant_object, grantee
from chatsec.audit.finding import Finding
from chatsec.policy.model import PUBLIC

_DATABASE_ACL = """
SELECT a.privilege_type
  FROM pg_catalog.pg_database d,
       pg_catalog.aclexplode(coalesce(d.datacl, pg_catalog.acldefault('d', d.datdba))) a
 WHERE d.datname = pg_catalog.current_database() AND a.grantee = 0
 ORDER BY 1
"""


def _run(ctx: AuditContext) -> list[Finding]:
    # EXECUTE on a SECURITY DEFINER function is definer-public-execute's finding.
    definers = definer_identities(ctx)
    out = findings_from(
        CHECK, ctx.changes,
        lambda c: c.kind in GRANT_KINDS and grantee(c) == PUBLIC
        and not (c.kind == "function-grant" and grant_object(c) in definers),
    )
    privs = [str(r[0]) for r in ctx.conn.execute(_DATABASE_ACL).fetchall()]
    if privs:
        db = ctx.url.database or "(database)"
        out.append(CHECK.finding(
            f"database {db}", f"{', '.join(privs)} granted to PUBLIC: every login of the "
            f"cluster may connect{' and create temporary objects' if 'TEMPORARY' in privs else ''}",
            level="warning",
            remediation=f'REVOKE ALL ON DATABASE "{db}" FROM PUBLIC; GRANT CONNECT, TEMPORARY '
                        f'ON DATABASE "{db}" TO app_user, chat_auditor',
        ))
    return out


CHECK = Check(
    id="public-grants",
    title="No privilege granted to PUBLIC",
    category="privileges",
    level="error",
    description="PUBLIC grants on the chat schemas, tables, columns, sequences and functions, "
                "and on the database itself (warning). Needs: catalog read.",
    remediation="REVOKE ... FROM PUBLIC",
    run=_run,
)
