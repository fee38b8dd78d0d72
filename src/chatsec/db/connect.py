"""Opening psycopg connections with chatsec's TLS stance and one-line errors."""

from __future__ import annotations

import os

import psycopg

from chatsec.db.url import VERIFYING_SSLMODES, DatabaseURL
from chatsec.errors import ChatsecError

INSECURE_ENV = "CHATSEC_ALLOW_INSECURE_TLS"
CONNECT_TIMEOUT_S = 5


def insecure_allowed() -> bool:
    return os.environ.get(INSECURE_ENV, "") in {"1", "true", "yes"}


def require_verified_tls(url: DatabaseURL, allow_insecure: bool = False) -> None:
    """Refuse URLs that would not verify the server (fail closed) unless explicitly allowed."""
    if url.sslmode in VERIFYING_SSLMODES or allow_insecure or insecure_allowed():
        return
    raise ChatsecError(
        f"refusing sslmode={url.sslmode} for {url.target}: chatsec connects only with "
        f"sslmode=verify-full (add ?sslmode=verify-full&sslrootcert=CA.crt to the URL, "
        f"or set {INSECURE_ENV}=1 to accept an unverified connection)"
    )


def describe_connect_error(url: DatabaseURL, exc: BaseException) -> str:
    """One line naming the target and libpq's own reason, without the password."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # libpq repeats the attempt per address; its last line holds the real reason.
    reason = lines[-1] if lines else type(exc).__name__
    for prefix in ("connection failed:", "FATAL:", "ERROR:"):
        if reason.startswith(prefix):
            reason = reason[len(prefix) :].strip()
    if url.password:
        reason = reason.replace(url.password, "***")
    return f"cannot connect to {url.target} as {url.user or '<default user>'}: {reason}"


def connect(
    url: DatabaseURL,
    *,
    autocommit: bool = False,
    allow_insecure: bool = False,
    application_name: str = "chatsec",
) -> psycopg.Connection[tuple[object, ...]]:
    """A psycopg connection, or a ChatsecError with one clear line."""
    require_verified_tls(url, allow_insecure)
    try:
        return psycopg.connect(
            url.libpq,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
        )
    except psycopg.Error as exc:
        raise ChatsecError(describe_connect_error(url, exc)) from None
