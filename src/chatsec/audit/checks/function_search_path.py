"""Every other function of the declared schemas pins a search_path that names pg_temp last.

A SECURITY INVOKER function runs as its caller, but it runs inside other people's
transactions too: the encryption trigger compiled against a caller's temporary domain
named `text` would run that domain's CHECK in every later writer's transaction, keys set.
"""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.audit.search_path import SAFE_PATH, function_paths


def _run(ctx: AuditContext) -> list[Finding]:
    declared = set(ctx.declared.schemas)
    return [
        CHECK.finding(f.identity, f.problem(), remediation=f.remediation())
        for f in function_paths(ctx)
        if not f.definer and f.schema in declared and f.unsafe
    ]


CHECK = Check(
    id="function-search-path",
    title="Functions of the chat schemas pin a safe search_path",
    category="functions",
    level="error",
    description="Every function (trigger functions included) of the schemas policies/ "
    "declares, SECURITY DEFINER ones aside (definer-search-path), that no extension "
    "installed, has a fixed search_path naming pg_temp last and no schema others may create "
    "in. Needs: catalog read.",
    remediation=f"ALTER FUNCTION ... SET search_path = {SAFE_PATH}",
    run=_run,
)
