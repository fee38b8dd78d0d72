"""The identity token: who acts, until when, signed with an identity key.

    v1.<key id>.<user id>.<expires: ms since 1970>.<nonce: 32 hex>.<HMAC-SHA256: 64 hex>

The MAC covers "chatsec-identity:" and the first five fields, keyed by the identity
key's 32-byte secret. chat.current_user_id() (policies/functions.toml) checks the same
fields, the expiry against the statement's start and the key against
chat.identity_keys (not retired), and returns the user id or NULL.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from uuid import UUID

from chatsec.keys.keyring import Key

VERSION = "v1"
SETTING = "app.identity"  # the transaction-local setting the token travels in
# Long enough for clock skew between the application and the database hosts and for
# a transaction's first statement; short enough that a token seen once is soon useless.
DEFAULT_LIFETIME_S = 30.0
MAX_LIFETIME_S = 3600.0
_CONTEXT = b"chatsec-identity:"


def mac(secret: bytes, payload: str) -> str:
    """The token's MAC over its first five fields (joined by dots)."""
    return hmac.new(secret, _CONTEXT + payload.encode(), hashlib.sha256).hexdigest()


def mint(
    key: Key,
    user_id: UUID,
    lifetime_s: float = DEFAULT_LIFETIME_S,
    *,
    now: float | None = None,
) -> str:
    """A token for `user_id`, valid for statements that start within `lifetime_s`."""
    if key.secret is None:
        raise ValueError(f"identity key {key.id} has no secret")
    issued = time.time() if now is None else now
    expires_ms = int((issued + lifetime_s) * 1000)
    payload = f"{VERSION}.{key.id}.{user_id}.{expires_ms}.{secrets.token_hex(16)}"
    return f"{payload}.{mac(key.secret, payload)}"
