"""The messages_encrypt trigger exists, is enabled, and calls chat.encrypt_message()."""

from __future__ import annotations

from chatsec.audit.check import Check, Skip
from chatsec.audit.context import (
    ENCRYPT_FUNCTION,
    ENCRYPT_TRIGGER,
    MESSAGES_TABLE,
    AuditContext,
)
from chatsec.audit.finding import Finding

# tgtype bits (pg_trigger.h): ROW 1, BEFORE 2, INSERT 4, DELETE 8, UPDATE 16.
_ROW, _BEFORE, _INSERT, _UPDATE = 1, 2, 4, 16
_TRIGGERS = """
SELECT t.tgname, t.tgenabled, t.tgtype, t.tgfoid::pg_catalog.regprocedure::text
  FROM pg_catalog.pg_trigger t
 WHERE t.tgrelid = pg_catalog.to_regclass(%s) AND NOT t.tgisinternal
   AND (t.tgname = %s OR t.tgfoid = pg_catalog.to_regprocedure(%s))
 ORDER BY 1
"""
_STATE = {"D": "disabled", "R": "enabled only for replication sessions"}
# Found by the function it calls (whatever its name), or by the conventional name.


def _run(ctx: AuditContext) -> list[Finding]:
    if not ctx.encryption_expected():
        raise Skip(f"encryption is not deployed: {ENCRYPT_FUNCTION} is neither declared in "
                   "policies/ nor present in the database")
    rows = ctx.conn.execute(
        _TRIGGERS, (MESSAGES_TABLE, ENCRYPT_TRIGGER, ENCRYPT_FUNCTION)
    ).fetchall()
    if not rows:
        return [CHECK.finding(f"{MESSAGES_TABLE}", f"no trigger calls {ENCRYPT_FUNCTION}: "
                              "messages are stored as the application sends them",
                              remediation="chatsec deploy (the encryption revision creates it)")]
    out = []
    for row in rows:
        out += _problems(*row)
    return out


def _problems(name: object, enabled: object, tgtype: object, function: object) -> list[Finding]:
    obj = f"trigger {name} on {MESSAGES_TABLE}"
    out = []
    if str(enabled) in _STATE:
        out.append(CHECK.finding(obj, f"the trigger is {_STATE[str(enabled)]}: new messages "
                                 "are stored in plaintext",
                                 remediation=f"ALTER TABLE {MESSAGES_TABLE} ENABLE TRIGGER {name}"))
    if str(function) != ENCRYPT_FUNCTION:
        out.append(CHECK.finding(obj, f"the trigger calls {function}, not {ENCRYPT_FUNCTION}",
                                 remediation="recreate the trigger as the encryption revision does"))
    kind = int(str(tgtype))
    missing = [label for bit, label in ((_ROW, "FOR EACH ROW"), (_BEFORE, "BEFORE"),
                                        (_INSERT, "INSERT"), (_UPDATE, "UPDATE"))
               if not kind & bit]
    if missing:
        out.append(CHECK.finding(obj, f"the trigger is not {' / '.join(missing)}: some writes "
                                 "of content bypass encryption",
                                 remediation="BEFORE INSERT OR UPDATE ... FOR EACH ROW"))
    return out


CHECK = Check(
    id="encryption-trigger",
    title="Encryption trigger present, enabled, bound to chat.encrypt_message()",
    category="encryption",
    level="error",
    description="pg_trigger on chat.messages: a trigger calling chat.encrypt_message() (or named "
                "messages_encrypt) exists, is enabled (not D or R), "
                "BEFORE INSERT OR UPDATE FOR EACH ROW, calling chat.encrypt_message(). Skipped "
                "when encryption is neither declared nor deployed. Needs: catalog read.",
    remediation="chatsec deploy; ALTER TABLE chat.messages ENABLE TRIGGER messages_encrypt",
    run=_run,
)
