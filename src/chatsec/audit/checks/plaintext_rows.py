"""No row of messages.content is plaintext, counted by the definer chat.encryption_summary()."""

from __future__ import annotations

from chatsec.audit.check import Check, Skip
from chatsec.audit.context import SUMMARY_FUNCTION, AuditContext
from chatsec.audit.finding import Finding

# The auditor reads no chat data; the definer function counts rows per key id for
# it. Its contract: one row per key id with a row count, NULL key id = not ciphertext.
# A `plaintext` boolean column, when the function has one, is used instead.


def _run(ctx: AuditContext) -> list[Finding]:
    if not ctx.function_exists(SUMMARY_FUNCTION):
        if not ctx.encryption_expected():
            raise Skip(f"encryption is not deployed: no {SUMMARY_FUNCTION}")
        return [CHECK.finding(SUMMARY_FUNCTION, f"encryption is deployed but {SUMMARY_FUNCTION} "
                              "does not exist, so plaintext rows cannot be counted",
                              remediation="deploy the encryption revision")]
    if not ctx.scalar("SELECT pg_catalog.has_function_privilege(%s, 'EXECUTE')",
                      (SUMMARY_FUNCTION,)):
        raise Skip(f"the audit login lacks EXECUTE on {SUMMARY_FUNCTION} "
                   "(GRANT EXECUTE ... TO chat_auditor)")
    cur = ctx.conn.execute(f"SELECT * FROM {SUMMARY_FUNCTION.removesuffix('()')}()")
    names = [d.name for d in cur.description or []]
    plaintext = 0
    for row in cur.fetchall():
        record = dict(zip(names, row, strict=True))
        count = int(str(record.get("rows", record.get("count", 0)) or 0))
        if "plaintext" in record:
            is_plain = bool(record["plaintext"])
        else:
            is_plain = record.get("key_id") in (None, "")
        if is_plain:
            plaintext += count
    if plaintext:
        return [CHECK.finding("chat.messages.content",
                              f"{plaintext} row(s) are not ciphertext (no key id): written while "
                              "the trigger was off, or loaded around it",
                              remediation="re-encrypt them: chatsec keys rotate")]
    return []


CHECK = Check(
    id="plaintext-rows",
    title="No plaintext message content",
    category="encryption",
    level="error",
    description="Rows per key id from the SECURITY DEFINER chat.encryption_summary(); a NULL key "
                "id counts as plaintext. Needs: EXECUTE on chat.encryption_summary().",
    remediation="re-encrypt the rows with chatsec keys rotate",
    run=_run,
)
