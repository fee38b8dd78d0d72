"""New passwords are stored as SCRAM-SHA-256 verifiers, not MD5 hashes."""

from __future__ import annotations

from chatsec.audit.check import Check
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding


def _run(ctx: AuditContext) -> list[Finding]:
    value = ctx.settings.get("password_encryption")
    if value != "scram-sha-256":
        return [CHECK.finding("setting password_encryption",
                              f"password_encryption = {value}: new passwords are stored as MD5 "
                              "hashes, which are password-equivalent for md5 authentication")]
    return []


CHECK = Check(
    id="password-encryption",
    title="password_encryption is scram-sha-256",
    category="server",
    level="error",
    description="The password_encryption setting. Needs: any login.",
    remediation="password_encryption = 'scram-sha-256', then reset every password",
    run=_run,
)
