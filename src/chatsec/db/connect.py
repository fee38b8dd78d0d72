"""Opening psycopg connections with chatsec's TLS stance and one-line errors."""

from __future__ import annotations

import os
from urllib.parse import quote

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


# Shorter passwords are not masked in free text: libpq never prints a password, and a
# short one would mask letters of ordinary words ("a" in "accepting").
_MASK_MIN_CHARS = 8


def mask_password(text: str, password: str | None) -> str:
    """`text` with `password` masked where a URL or conninfo would carry it."""
    if not password:
        return text
    for shown, masked in (
        (f":{password}@", ":***@"),
        (f":{quote(password, safe='')}@", ":***@"),
        (f"password={password}", "password=***"),
    ):
        text = text.replace(shown, masked)
    if len(password) >= _MASK_MIN_CHARS:
        text = text.replace(password, "***")
    return text


def libpq_reason(exc: BaseException) -> str:
    """libpq's whole reason for the last address it tried, on one line.

    libpq reports each address it tried as `connection to server at ... failed: REASON`,
    the reason sometimes over several lines ("server closed the connection unexpectedly /
    This probably means ... / before or while processing the request."): all of the last
    attempt's lines are kept, joined, without the FATAL:/ERROR: tag.
    """
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    start = max(
        (i for i, ln in enumerate(lines) if " failed: " in ln or ln.endswith(" failed:")), default=0
    )
    first = lines[start]
    if " failed:" in first:
        first = first.rsplit(" failed:", 1)[1].strip()
    reason = " ".join(part for part in [first, *lines[start + 1 :]] if part)
    for prefix in ("connection failed:", "FATAL:", "ERROR:"):
        if reason.startswith(prefix):
            reason = reason[len(prefix) :].strip()
    return reason or type(exc).__name__


def describe_connect_error(url: DatabaseURL, exc: BaseException) -> str:
    """One line naming the target and libpq's own reason, without the password."""
    reason = mask_password(libpq_reason(exc), url.password)
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
