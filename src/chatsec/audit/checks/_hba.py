"""pg_hba.conf over SQL, for the checks that read it (hba-rules, privileged-login-hba)."""

from __future__ import annotations

from chatsec.audit.check import Skip
from chatsec.audit.context import AuditContext

HBA_PRIVILEGE = (
    "needs SELECT on pg_catalog.pg_hba_file_rules and EXECUTE on "
    "pg_catalog.pg_hba_file_rules() (superuser only by default)"
)


def require_hba_rules(ctx: AuditContext) -> None:
    """Skip the calling check, naming the privileges, unless the audit login reads pg_hba."""
    readable = ctx.scalar(
        "SELECT pg_catalog.has_table_privilege('pg_catalog.pg_hba_file_rules', 'SELECT') "
        "AND pg_catalog.has_function_privilege('pg_catalog.pg_hba_file_rules()', 'EXECUTE')"
    )
    if not readable:
        raise Skip(HBA_PRIVILEGE)
