"""The declared functions exist with their declared definitions, and no undeclared one."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.audit.search_path import unsafe_functions


def _run(ctx: AuditContext) -> list[Finding]:
    # A function with no or an unsafe search_path is definer-search-path's or
    # function-search-path's finding;
    # reporting it twice would blur which check a CI failure is about.
    owned_elsewhere = unsafe_functions(ctx)
    out = []
    for change in ctx.changes:
        if change.kind != "function":
            continue
        parts = change.detail.split("; ")
        if change.object in owned_elsewhere:
            parts = [p for p in parts if not p.startswith("search_path ")]
        if not parts:
            continue
        fix = "; ".join(change.up) if change.up and len("; ".join(change.up)) <= 300 else (
            "apply `chatsec plan`'s SQL through a revision")
        out.append(CHECK.finding(change.object, f"{change.action}: {'; '.join(parts)}",
                                 remediation=fix))
    return out


CHECK = Check(
    id="functions-match",
    title="Functions as declared",
    category="declared-state",
    level="error",
    description="Return type, language, volatility, SECURITY DEFINER, search_path and body of "
                "every function in the chat schemas against policies/functions.toml. "
                "Needs: catalog read.",
    remediation="CREATE OR REPLACE the function as declared",
    run=_run,
)
