"""No setting that writes keys (bound by set_config) or message plaintext into the server log."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    s = ctx.settings
    out = []
    why = ("the server log then holds the bound parameters: encryption keys set with "
           "set_config(...) and message plaintext")
    if s.get("log_statement") in {"all", "mod"}:
        out.append(CHECK.finding("setting log_statement", f"log_statement = {s['log_statement']}: "
                                 f"{why}", remediation="log_statement = 'ddl' (or 'none')"))
    if s.get("log_min_duration_statement") == "0":
        out.append(CHECK.finding("setting log_min_duration_statement",
                                 f"log_min_duration_statement = 0 logs every statement: {why}",
                                 remediation="log_min_duration_statement = -1, or a threshold "
                                             "like 500 with log_parameter_max_length = 0"))
    if s.get("log_min_duration_sample", "-1") != "-1" and s.get(
        "log_statement_sample_rate", "0"
    ) not in {"0", "0.0"}:
        out.append(CHECK.finding("setting log_min_duration_sample",
                                 f"sampled statement logging is on: {why}",
                                 remediation="log_min_duration_sample = -1"))
    if s.get("log_parameter_max_length_on_error", "0") != "0":
        out.append(CHECK.finding("setting log_parameter_max_length_on_error",
                                 "failed statements are logged with their parameters: a key "
                                 "set in a statement that fails reaches the log",
                                 level="info",
                                 remediation="log_parameter_max_length_on_error = 0"))
    preload = ",".join(s.get(k, "") for k in ("shared_preload_libraries",
                                               "session_preload_libraries"))
    explain_on = "auto_explain" in preload and s.get("auto_explain.log_min_duration", "-1") != "-1"
    if explain_on and (s.get("auto_explain.log_verbose") == "on"
                       or s.get("auto_explain.log_parameter_max_length", "-1") != "0"):
            out.append(CHECK.finding("setting auto_explain.log_verbose",
                                     f"auto_explain logs plans with their parameters and output "
                                     f"expressions: {why}",
                                     remediation="auto_explain.log_verbose = off, "
                                                 "auto_explain.log_parameter_max_length = 0"))
    return out


CHECK = Check(
    id="logging-leaks-keys",
    title="Logging does not capture keys",
    category="server",
    level="warning",
    description="log_statement (all, mod), log_min_duration_statement = 0, sampled statement "
                "logging, auto_explain with verbose output or parameters; parameters on error "
                "(info). Needs: pg_read_all_settings for the superuser-only ones.",
    remediation="log_statement = 'ddl', log_min_duration_statement = -1",
    run=_run,
)
