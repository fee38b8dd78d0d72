"""Only the verifier can read the identity keys: no other role, no other function."""

from __future__ import annotations

from chatsec.audit.check import Check, Skip
from chatsec.audit.checks._roles import database_owner
from chatsec.audit.context import AuditContext
from chatsec.audit.finding import Finding
from chatsec.identity.manage import IDENTITY_ROLE

IDENTITY_TABLE = "chat.identity_keys"
VERIFIER = "chat.current_user_id()"

# Roles that can read the secrets, by a grant (to them, a role they inherit, or PUBLIC) on
# the table or its secret column, or as members of chat_identity: not counting
# chat_identity, the database's owner (the migrator, which registers the keys as
# chat_identity and could replace the verifier anyway), and superusers (who read
# everything; app-user-attributes and undeclared-logins report them). Predefined roles
# (pg_read_all_data) count through the roles that are members of them.
_READERS = """
SELECT r.rolname FROM pg_catalog.pg_roles r
 WHERE NOT r.rolsuper AND r.rolname NOT IN (%(role)s, %(owner)s)
   AND r.rolname !~ '^pg_'
   AND (pg_catalog.has_table_privilege(r.oid, %(table)s::pg_catalog.regclass, 'SELECT')
        OR pg_catalog.has_column_privilege(r.oid, %(table)s::pg_catalog.regclass, 'secret', 'SELECT'))
 ORDER BY 1
"""
# Who can become chat_identity (SET ROLE or inheritance) while also being, or acting
# as, the application or the auditor: SQL through those logins could then read the keys.
_MEMBERS_ALSO_APP_OR_AUDITOR = """
SELECT r.rolname FROM pg_catalog.pg_roles r
 WHERE r.rolname <> %(role)s AND NOT r.rolsuper
   AND pg_catalog.pg_has_role(r.oid, %(role)s, 'MEMBER')
   AND (pg_catalog.pg_has_role(r.oid, 'app_user', 'MEMBER')
        OR pg_catalog.pg_has_role(r.oid, 'chat_auditor', 'MEMBER'))
 ORDER BY 1
"""
# Anything else that runs as chat_identity is another way to the keys.
_OTHER_OBJECTS = """
SELECT p.oid::pg_catalog.regprocedure::pg_catalog.text FROM pg_catalog.pg_proc p
 WHERE p.proowner = %(role)s::pg_catalog.regrole
   AND p.oid <> pg_catalog.to_regprocedure(%(verifier)s)
UNION ALL
SELECT c.oid::pg_catalog.regclass::pg_catalog.text FROM pg_catalog.pg_class c
 WHERE c.relowner = %(role)s::pg_catalog.regrole
   AND c.oid <> %(table)s::pg_catalog.regclass AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
 ORDER BY 1
"""
_OWNERS = """
SELECT (SELECT c.relowner::pg_catalog.regrole::pg_catalog.text FROM pg_catalog.pg_class c
         WHERE c.oid = %(table)s::pg_catalog.regclass),
       (SELECT p.proowner::pg_catalog.regrole::pg_catalog.text FROM pg_catalog.pg_proc p
         WHERE p.oid = pg_catalog.to_regprocedure(%(verifier)s)),
       (SELECT p.prosecdef FROM pg_catalog.pg_proc p
         WHERE p.oid = pg_catalog.to_regprocedure(%(verifier)s))
"""


def _run(ctx: AuditContext) -> list[Finding]:
    if ctx.scalar("SELECT pg_catalog.to_regclass(%s)", (IDENTITY_TABLE,)) is None:
        raise Skip(
            f"{IDENTITY_TABLE} does not exist: signed identity is not deployed (revision "
            "0011); probe-identity reports what that means"
        )
    params = {
        "role": IDENTITY_ROLE,
        "table": IDENTITY_TABLE,
        "verifier": VERIFIER,
        "owner": database_owner(ctx),
    }
    out = []
    row = ctx.conn.execute(_OWNERS, params).fetchone()
    table_owner, verifier_owner, definer = row if row else (None, None, None)
    if table_owner != IDENTITY_ROLE:
        out.append(
            CHECK.finding(
                IDENTITY_TABLE,
                f"owned by {table_owner}, not {IDENTITY_ROLE}: its owner reads every identity key",
                remediation=f"ALTER TABLE {IDENTITY_TABLE} OWNER TO {IDENTITY_ROLE}",
            )
        )
    if verifier_owner != IDENTITY_ROLE or definer is not True:
        out.append(
            CHECK.finding(
                VERIFIER,
                f"owned by {verifier_owner}, SECURITY {'DEFINER' if definer else 'INVOKER'}: "
                f"the verifier must run as {IDENTITY_ROLE} (SECURITY DEFINER), the only reader of "
                "the keys",
                remediation="chatsec plan shows the statements (policies/functions.toml)",
            )
        )
    for (name,) in ctx.conn.execute(_READERS, params).fetchall():
        out.append(
            CHECK.finding(
                f"role {name}",
                f"{name} can read {IDENTITY_TABLE} (SELECT on it or on its secret "
                "column): whoever logs in as it can sign any user's identity",
                remediation=f"REVOKE ALL ON {IDENTITY_TABLE} FROM {name}; then chatsec keys "
                "identity rotate",
            )
        )
    for (name,) in ctx.conn.execute(_MEMBERS_ALSO_APP_OR_AUDITOR, params).fetchall():
        out.append(
            CHECK.finding(
                f"role {name}",
                f"{name} is a member of {IDENTITY_ROLE} and of app_user or "
                "chat_auditor: SQL through the application or the auditor could SET ROLE "
                f"{IDENTITY_ROLE} and read every identity key",
                remediation=f"REVOKE {IDENTITY_ROLE} FROM {name}; then chatsec keys identity rotate",
            )
        )
    for (name,) in ctx.conn.execute(_OTHER_OBJECTS, params).fetchall():
        out.append(
            CHECK.finding(
                str(name),
                f"{name} is owned by {IDENTITY_ROLE}: anything but {VERIFIER} running "
                "as the keys' reader is another way to them",
                remediation="drop it, or hand it to another role (ALTER ... OWNER TO)",
            )
        )
    return out


CHECK = Check(
    id="identity-key-readers",
    title="Only the verifier can read the identity keys",
    category="privileges",
    level="error",
    description=f"{IDENTITY_TABLE} and {VERIFIER} are owned by {IDENTITY_ROLE} (the verifier "
    "SECURITY DEFINER); no other role but the database's owner (the migrator) and superusers "
    f"can read the table or its secret column; no member of {IDENTITY_ROLE} is also the application or the auditor; "
    f"{IDENTITY_ROLE} owns nothing else. Skipped before revision 0011. Needs: catalog read.",
    remediation="restore the ownership and grants from policies/ (chatsec plan); rotate the "
    "identity keys after any exposure",
    run=_run,
)
