"""What every check gets: the auditor's connection, the declaration, and lazily computed facts."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from chatsec.db.url import DatabaseURL
from chatsec.policy.compare import Change, diff_live
from chatsec.policy.model import SecurityState

Conn = psycopg.Connection[tuple[object, ...]]

APP_ROLE = "app_user"
OWNER_ROLE = "chat_owner"
DEFINER_ROLE = "chat_definer"
ENCRYPT_FUNCTION = "chat.encrypt_message()"
SUMMARY_FUNCTION = "chat.encryption_summary()"
ENCRYPT_TRIGGER = "messages_encrypt"
MESSAGES_TABLE = "chat.messages"


@dataclass(frozen=True)
class ProbeConfig:
    """The behavioural probes: on or off, the application login, optional keyrings."""

    enabled: bool = True
    app_url: DatabaseURL | None = None
    keyring: Path | None = None  # for probe messages when the encryption trigger is deployed
    identity_keyring: Path | None = None  # to sign the probe users' identities (0011 on)


@dataclass
class AuditContext:
    """Shared by the checks of one audit. Facts are computed once, on first use."""

    conn: Conn
    url: DatabaseURL
    declared: SecurityState
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    _changes: list[Change] | None = None
    _settings: dict[str, str] | None = None

    @property
    def changes(self) -> list[Change]:
        """policies/ against the live database (needs only TEMPORARY: it uses temp tables)."""
        if self._changes is None:
            self._changes = diff_live(self.conn, self.declared)
        return self._changes

    @property
    def settings(self) -> dict[str, str]:
        """pg_settings as the auditor sees them (pg_read_all_settings shows the hidden ones)."""
        if self._settings is None:
            rows = self.conn.execute("SELECT name, setting FROM pg_catalog.pg_settings").fetchall()
            self._settings = {str(n): str(s) for n, s in rows}
        return self._settings

    def scalar(self, query: str, params: tuple[object, ...] = ()) -> object:
        row = self.conn.execute(query.encode(), params).fetchone()
        return None if row is None else row[0]

    def function_exists(self, identity: str) -> bool:
        return self.scalar("SELECT pg_catalog.to_regprocedure(%s) IS NOT NULL", (identity,)) is True

    def encryption_expected(self) -> bool:
        """Encryption is in scope when policies/ declares its trigger function or it is deployed."""
        return ENCRYPT_FUNCTION in self.declared.functions or self.function_exists(ENCRYPT_FUNCTION)
