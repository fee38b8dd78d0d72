"""No setting writes keys (bound by set_config) or chat statements into the server log.

Every layer counts: the server, ALTER DATABASE / ALTER ROLE ALL defaults, and each role's
own defaults, including what a login set for itself with ALTER ROLE CURRENT_USER SET
(chatsec.app pins some of them per session, but any other client of that login gets them).
The log must also say who connected and who ran what: forensics gaps are warnings.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from chatsec.audit.check import Check
from chatsec.audit.checks._settings import Context, Layers, Value, is_on, number
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding, Level

_WHY = (
    "the server log then holds chat statements with their bound parameters: encryption "
    "keys set with set_config(...) and message plaintext"
)
# Settings this check judges; role-defaults leaves them to it.
LOGGING_SETTINGS = frozenset(
    {
        "log_statement",
        "log_min_duration_statement",
        "log_min_duration_sample",
        "log_statement_sample_rate",
        "log_transaction_sample_rate",
        "log_parameter_max_length",
        "log_parameter_max_length_on_error",
        "debug_print_parse",
        "debug_print_rewritten",
        "debug_print_plan",
        "log_connections",
        "log_disconnections",
        "log_line_prefix",
        "shared_preload_libraries",
        "session_preload_libraries",
        "local_preload_libraries",
        "auto_explain.log_min_duration",
        "auto_explain.log_verbose",
        "auto_explain.log_parameter_max_length",
        "pgaudit.log",
        "pgaudit.log_parameter",
    }
)
_STATEMENT_CLASSES = {"read", "write", "function"}  # pgaudit classes that log chat statements
_PG16 = 160000


@dataclass(frozen=True)
class Issue:
    """A problem in one context: the values behind it (the offending setting first), why,
    and the safe value of that setting."""

    values: tuple[Value, ...]
    detail: str
    forensic: bool = False
    fix: str = ""


def _shown(v: Value) -> str:
    value = "(default)" if v.value is None else repr(v.value)
    return f"{v.name} = {value} ({v.layer.where})"


def _params_logged(c: Context) -> tuple[bool, Value]:
    length = c.get("log_parameter_max_length")  # default -1: parameters logged in full
    return (not length.known) or number(length.value, -1) != 0, length


def _statement_issues(c: Context) -> list[Issue]:
    out = []
    stmt = c.get("log_statement")
    if (stmt.value or "").strip().lower() in {"mod", "all"}:
        out.append(
            Issue((stmt,), f"{_shown(stmt)} logs chat statements: {_WHY}", fix="'ddl' (or 'none')")
        )
    params, length = _params_logged(c)
    if not params:
        return out  # statement texts alone hold no data: every value is a bind parameter
    duration = c.get("log_min_duration_statement")
    if number(duration.value, -1) >= 0:
        out.append(
            Issue(
                (duration, length),
                f"{_shown(duration)} with {_shown(length)}: {_WHY}",
                fix="-1, or a threshold with log_parameter_max_length = 0",
            )
        )
    sample = c.get("log_min_duration_sample")
    rate = c.get("log_statement_sample_rate")
    if number(sample.value, -1) >= 0 and number(rate.value, 1) > 0:
        out.append(
            Issue(
                (sample, rate, length),
                f"sampled statement logging: {_shown(sample)}, "
                f"{_shown(rate)}, {_shown(length)}: {_WHY}",
                fix="-1",
            )
        )
    xact = c.get("log_transaction_sample_rate")
    if number(xact.value, 0) > 0:
        out.append(
            Issue(
                (xact, length),
                f"{_shown(xact)} logs every statement of sampled "
                f"transactions, with {_shown(length)}: {_WHY}",
                fix="0",
            )
        )
    return out


def _error_and_debug_issues(c: Context) -> list[Issue]:
    out = []
    on_error = c.get("log_parameter_max_length_on_error")
    if number(on_error.value, 0) != 0:
        out.append(
            Issue(
                (on_error,),
                f"{_shown(on_error)}: a statement that fails is logged "
                "with its parameters, a key set in a failing transaction included",
                fix="0",
            )
        )
    for name in ("debug_print_parse", "debug_print_rewritten", "debug_print_plan"):
        debug = c.get(name)
        if is_on(debug.value):
            out.append(
                Issue(
                    (debug,),
                    f"{_shown(debug)} prints every query tree, its constants "
                    f"included, into the log: {_WHY}",
                    fix="off",
                )
            )
    return out


def _library_issues(c: Context, server_version: int) -> list[Issue]:
    libraries = [
        c.get(n)
        for n in (
            "shared_preload_libraries",
            "session_preload_libraries",
            "local_preload_libraries",
        )
    ]
    loaded = {
        lib: v
        for v in libraries
        for lib in (p.strip().strip('"').lower() for p in (v.value or "").split(","))
    }
    out = []
    explain = c.get("auto_explain.log_min_duration")
    if "auto_explain" in loaded and number(explain.value, -1) >= 0:
        verbose = c.get("auto_explain.log_verbose")
        # PostgreSQL 16 added parameter logging to auto_explain, on (-1) by default.
        length = c.get("auto_explain.log_parameter_max_length")
        logs_params = server_version >= _PG16 and number(length.value, -1) != 0
        if is_on(verbose.value) or logs_params:
            shown = _shown(verbose) if is_on(verbose.value) else _shown(length)
            out.append(
                Issue(
                    (explain, loaded["auto_explain"]),
                    f"auto_explain logs plans of "
                    f"chat statements ({_shown(explain)}) with {shown}: {_WHY}",
                    fix="-1, or auto_explain.log_verbose = off and "
                    "auto_explain.log_parameter_max_length = 0",
                )
            )
    audit_log = c.get("pgaudit.log")
    classes = pgaudit_classes(audit_log.value)
    if "pgaudit" in loaded and classes & _STATEMENT_CLASSES:
        with_params = c.get("pgaudit.log_parameter")
        extra = (
            f", and with {_shown(with_params)} their parameters" if is_on(with_params.value) else ""
        )
        out.append(
            Issue(
                (audit_log,),
                f"{_shown(audit_log)} logs the text of every chat "
                f"{'/'.join(sorted(classes & _STATEMENT_CLASSES))} statement{extra}: "
                "the log becomes a record of who read and wrote what",
                fix="'ddl, role'",
            )
        )
    return out


def pgaudit_classes(value: str | None) -> set[str]:
    """pgaudit.log as the set of classes it turns on ('all', '-read' and the like)."""
    every = {"read", "write", "function", "role", "ddl", "misc", "misc_set"}
    out: set[str] = set()
    for item in (value or "").lower().split(","):
        item = item.strip()
        drop = item.startswith("-")
        name = item.lstrip("-").strip()
        names = every if name == "all" else ({name} if name in every else set())
        out = out - names if drop else out | names
    return out


def _forensic_issues(c: Context) -> list[Issue]:
    out = []
    for name, what in (
        ("log_connections", "who connected, from where"),
        ("log_disconnections", "how long each session lasted"),
    ):
        v = c.get(name)
        if not is_on(v.value):
            out.append(
                Issue((v,), f"{_shown(v)}: the log cannot tell {what}", forensic=True, fix="on")
            )
    prefix = c.get("log_line_prefix")  # default '%m [%p] ': no user, no database
    text = prefix.value if prefix.value is not None else "%m [%p] "
    missing = [p for p in ("%u", "%d") if p not in text]
    if missing:
        out.append(
            Issue(
                (prefix,),
                f"{_shown(prefix)} lacks {' and '.join(missing)}: a logged "
                "line does not say which user in which database ran it",
                forensic=True,
                fix="'%m [%p] %q%u@%d '",
            )
        )
    return out


def _deciding(c: Context, issue: Issue) -> Value:
    """The value that decides in this context: the one from the highest-precedence layer."""
    return min(issue.values, key=lambda v: c.layers.index(v.layer))


def _finding(c: Context, issue: Issue) -> Finding | None:
    decisive = _deciding(c, issue)
    layer = decisive.layer
    if c.role is not None and not layer.is_role:
        return None  # the same as for any login: reported once, from the first context
    level: Level = "warning" if issue.forensic else "error"
    detail = issue.detail
    if layer.is_role and not layer.login:
        # Role defaults apply to sessions of that role only: a NOLOGIN role has none yet.
        level, detail = "warning", f"{detail} (applies once {layer.role} may log in)"
    # On the server every value involved is the server's: fix the offending setting there.
    fix = (
        f"ALTER SYSTEM SET {issue.values[0].name} = {issue.fix} (or postgresql.conf), reload"
        if layer.where == "server"
        else f"{layer.alter} RESET {decisive.name}"
    )
    return CHECK.finding(
        f"setting {decisive.name} ({layer.where})", detail, level=level, remediation=fix
    )


def _hidden(ctx_values: list[Value]) -> list[Finding]:
    names = sorted({v.name for v in ctx_values if not v.known})
    return [
        CHECK.finding(
            f"setting {n} (server)",
            f"the server's value of {n} cannot be "
            "verified: the audit login's own default (ALTER ROLE, or a SET in its "
            "session) hides it",
            level="warning",
            remediation="ALTER ROLE <audit login> RESET " + n,
        )
        for n in names
    ]


def _run(ctx: AuditContext) -> list[Finding]:
    layers = Layers.read(ctx)
    version = ctx.conn.info.server_version
    rules: list[Callable[[Context], list[Issue]]] = [
        _statement_issues,
        _error_and_debug_issues,
        lambda c: _library_issues(c, version),
        _forensic_issues,
    ]
    out: dict[tuple[str, str], Finding] = {}
    examined: list[Value] = []
    for context in layers.contexts():
        for rule in rules:
            for issue in rule(context):
                finding = _finding(context, issue)
                if finding is not None:
                    out.setdefault((finding.object, finding.detail), finding)
        if context.role is None:
            examined += [context.get(n) for n in sorted(LOGGING_SETTINGS)]
    return [*out.values(), *_hidden(examined), *_invisible(ctx)]


def _invisible(ctx: AuditContext) -> list[Finding]:
    # Without pg_read_all_settings pg_settings leaves the superuser-only rows out: the
    # preloaded auto_explain or pgaudit would then go unseen, not be absent.
    if "shared_preload_libraries" in ctx.settings:
        return []
    return [
        CHECK.finding(
            "setting shared_preload_libraries (server)",
            "not visible to the audit login: whether auto_explain or pgaudit log chat "
            "statements cannot be verified",
            level="warning",
            remediation="GRANT pg_read_all_settings TO chat_auditor",
        )
    ]


CHECK = Check(
    id="logging-leaks-keys",
    title="Logging captures no keys, and who did what",
    category="server",
    level="error",
    description="Every layer: server settings, ALTER DATABASE / ALTER ROLE ALL defaults and "
    "each role's own defaults (pg_db_role_setting, including those a login set for "
    "itself). Errors: log_statement mod/all; log_min_duration_statement >= 0, "
    "sampling (log_min_duration_sample >= 0 with log_statement_sample_rate > 0) or "
    "log_transaction_sample_rate > 0 while log_parameter_max_length is not 0; "
    "log_parameter_max_length_on_error not 0; debug_print_* on; auto_explain with "
    "verbose output or (PostgreSQL 16+) parameters; pgaudit logging read, write or "
    "function statements. Warnings: log_connections or log_disconnections off, "
    "log_line_prefix without %u and %d, a NOLOGIN role's defaults, a server value "
    "the audit login's own defaults hide. Needs: pg_read_all_settings for the "
    "superuser-only ones.",
    remediation="log_statement = 'ddl', log_min_duration_statement = -1, "
    "log_parameter_max_length_on_error = 0",
    run=_run,
)
