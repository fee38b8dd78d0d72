"""No encryption key is stored in the database: settings, function bodies, column defaults."""

from __future__ import annotations

import re

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding

KEY_SETTINGS = ("app.encryption_key", "app.decryption_keys")
# A chatsec key is 32 random bytes written as 64 hex digits.
HEX_KEY = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")
_SETS_KEY = re.compile(
    r"set_config\s*\(\s*'app\.(encryption_key|decryption_keys)'|"
    r"\bset\s+(local\s+)?app\.(encryption_key|decryption_keys)\b",
    re.IGNORECASE,
)
_ROLE_SETTINGS = """
SELECT coalesce(d.datname, '(all databases)'), coalesce(r.rolname, '(all roles)'), s.setconfig
  FROM pg_catalog.pg_db_role_setting s
  LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
  LEFT JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
"""
_FUNCTIONS = """
SELECT p.oid::pg_catalog.regprocedure::text, p.prosrc, p.proconfig
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
_DEFAULTS = """
SELECT c.oid::pg_catalog.regclass::text || '.' || a.attname,
       pg_catalog.pg_get_expr(d.adbin, d.adrelid)
  FROM pg_catalog.pg_attrdef d
  JOIN pg_catalog.pg_class c ON c.oid = d.adrelid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
"""
# Where a setting came from if not from a session: the config file or the command line.
_SERVER_SOURCES = """
SELECT name, source FROM pg_catalog.pg_settings
 WHERE name = ANY(%s) AND source NOT IN ('default', 'session', 'client', 'database', 'user',
                                          'database user')
"""


def _names_key(entry: str) -> bool:
    key, _, value = entry.partition("=")
    return key in KEY_SETTINGS or bool(HEX_KEY.search(value))


def _run(ctx: AuditContext) -> list[Finding]:
    out = []
    for db, role, config in ctx.conn.execute(_ROLE_SETTINGS).fetchall():
        for entry in config or []:  # type: ignore[attr-defined]
            if _names_key(str(entry)):
                key = str(entry).partition("=")[0]
                alter = ("DATABASE " + str(db)) if role == "(all roles)" else f"ROLE {role}"
                out.append(CHECK.finding(
                    f"setting {key} for database {db}, role {role}",
                    f"{key} is stored in pg_db_role_setting (ALTER DATABASE/ROLE ... SET): "
                    "every backup and every login that reads the catalog has the key",
                    remediation=f"ALTER {alter} RESET {key}; then rotate the key"))
    for ident, src, config in ctx.conn.execute(_FUNCTIONS).fetchall():
        body = str(src or "")
        reasons = []
        if HEX_KEY.search(body):
            reasons.append("its body holds a 64-hex-digit literal")
        if _SETS_KEY.search(body):
            reasons.append("its body sets the key setting")
        if any(str(e).partition("=")[0] in KEY_SETTINGS for e in config or []):  # type: ignore[attr-defined]
            reasons.append("it has SET app.encryption_key (proconfig)")
        if reasons:
            out.append(CHECK.finding(
                str(ident), f"function {ident}: {'; '.join(reasons)}",
                remediation="keys travel only as set_config(..., true) bind parameters; "
                            "replace the function and rotate the key"))
    for column, expr in ctx.conn.execute(_DEFAULTS).fetchall():
        text = str(expr or "")
        if HEX_KEY.search(text) or "encrypt" in text.lower():
            out.append(CHECK.finding(
                str(column), f"column default {text[:80]} holds key material or encrypts with it",
                remediation=f"ALTER TABLE ... ALTER COLUMN {str(column).rpartition('.')[2]} "
                            "DROP DEFAULT; rotate the key"))
    for name, source in ctx.conn.execute(_SERVER_SOURCES, (list(KEY_SETTINGS),)).fetchall():
        out.append(CHECK.finding(
            f"setting {name}", f"{name} is set from the {source}: every session starts with the key",
            remediation=f"remove {name} from postgresql.conf / the server command line"))
    return out


CHECK = Check(
    id="key-in-database",
    title="No encryption key stored in the database",
    category="encryption",
    level="error",
    description="app.encryption_key / app.decryption_keys or a 64-hex value in pg_db_role_setting "
                "(ALTER DATABASE/ROLE SET), function bodies and proconfig, column defaults, and "
                "server-level settings. Needs: catalog read.",
    remediation="remove the stored key and rotate it",
    run=_run,
)
