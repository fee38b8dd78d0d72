"""The server has ssl on, and this very audit session runs over TLS."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    out = []
    if ctx.settings.get("ssl") != "on":
        out.append(CHECK.finding("setting ssl", f"ssl = {ctx.settings.get('ssl')}: every "
                                 "connection, passwords and messages included, is plaintext"))
    row = ctx.conn.execute(
        "SELECT ssl, version FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()"
    ).fetchone()
    if row is None or not row[0]:
        out.append(CHECK.finding(
            "audit session", "this audit's own connection is not encrypted",
            level="warning", remediation="connect with sslmode=verify-full"))
    return out


CHECK = Check(
    id="ssl-on",
    title="TLS on",
    category="server",
    level="error",
    description="The ssl setting, and pg_stat_ssl for the audit's own session. Needs: any login.",
    remediation="ssl = on with ssl_cert_file / ssl_key_file in postgresql.conf",
    run=_run,
)
