"""Nothing an attacker could leave behind: no undeclared trigger, rule, function, table, view,
sequence, type or event trigger in the schemas the chat uses.

A database taken over from the application login was left with an extra trigger on
chat.messages copying plaintext into metadata and a SECURITY DEFINER function in
`extensions` running any SQL; both were invisible to the other checks. This one reports,
as `chatsec plan` does, every trigger on a declared table that policies/ does not declare
(or declares and finds disabled), and every object in the chat schemas, `extensions`,
`public` and any schema app_user may use that is neither declared nor a member of an
installed extension, with its owner and definition.
"""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import ENCRYPT_FUNCTION, AuditContext
from chatsec.audit.diffmap import findings_from
from chatsec.audit.finding import Finding

KINDS = {"trigger", "object"}


def _run(ctx: AuditContext) -> list[Finding]:
    # The declared encryption trigger, missing or disabled, is encryption-trigger's finding.
    encryption = {
        f"{trigger.name} on {trigger.table}"
        for table in ctx.declared.tables.values()
        for trigger in table.triggers.values()
        if f"EXECUTE FUNCTION {ENCRYPT_FUNCTION}" in trigger.definition
    }
    return findings_from(
        CHECK, ctx.changes, lambda c: c.kind in KINDS and c.object not in encryption
    )


CHECK = Check(
    id="undeclared-objects",
    title="No undeclared trigger, rule or object",
    category="declared-state",
    level="error",
    description="Triggers on the declared tables exactly as policies/ declares them (and "
    "enabled); no rule; no table, view, sequence, type, function, procedure or event "
    "trigger in the chat schemas, extensions, public or any schema app_user may use that is "
    "neither declared nor owned by an installed extension. Needs: catalog read.",
    remediation="drop it (the finding's SQL) or declare it in policies/",
    run=_run,
)
