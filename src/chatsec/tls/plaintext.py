"""Does the server accept a connection without TLS? Asked the only reliable way: by trying."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from chatsec.db.connect import CONNECT_TIMEOUT_S, libpq_reason, mask_password
from chatsec.db.url import DatabaseURL

# libpq's wording when pg_hba.conf has no line for a non-TLS connection (or a reject line).
_REFUSED = ("no pg_hba.conf entry", "pg_hba.conf rejects connection")
# Reaching authentication means some pg_hba.conf line accepted the plaintext transport.
_REACHED_AUTH = ("password authentication failed", "authentication failed", "password is required")


@dataclass(frozen=True)
class PlaintextAttempt:
    """accepted: True (connected or reached authentication), False (refused), None (unknown)."""

    accepted: bool | None
    reason: str


def try_plaintext(url: DatabaseURL) -> PlaintextAttempt:
    plain = url.with_query(sslmode="disable", gssencmode="disable")
    try:
        conn = psycopg.connect(plain.libpq, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="chatsec plaintext probe")
    except psycopg.OperationalError as exc:
        text = str(exc).strip()
        reason = mask_password(libpq_reason(exc), url.password)
        low = text.lower()
        if any(marker in low for marker in _REFUSED):
            return PlaintextAttempt(False, reason)
        if any(marker in low for marker in _REACHED_AUTH):
            return PlaintextAttempt(True, f"the server reached authentication: {reason}")
        return PlaintextAttempt(None, reason)
    conn.close()
    return PlaintextAttempt(True, "a connection with sslmode=disable succeeded")
