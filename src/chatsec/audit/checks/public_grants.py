"""Nothing granted to PUBLIC: not on chat objects, not on the database."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.checks.definer_public_execute import definer_identities
from chatsec.audit.context import AuditContext
from chatsec.audit.diffmap import GRANT_KINDS, findings_from, grant_object, grantee
from chatsec.audit.finding import Finding
from chatsec.policy.model import PUBLIC


def _run(ctx: AuditContext) -> list[Finding]:
    # EXECUTE on a SECURITY DEFINER function is definer-public-execute's finding.
    definers = definer_identities(ctx)
    out = findings_from(
        CHECK, ctx.changes,
        lambda c: c.kind in GRANT_KINDS and grantee(c) == PUBLIC
        and not (c.kind == "function-grant" and grant_object(c) in definers),
    )
    return out


CHECK = Check(
    id="public-grants",
    title="No privilege granted to PUBLIC",
    category="privileges",
    level="error",
    description="PUBLIC grants on the database itself (CONNECT, TEMPORARY), the chat schemas, "
                "tables, columns, sequences and functions. Needs: catalog read.",
    remediation="REVOKE ... FROM PUBLIC",
    run=_run,
)
