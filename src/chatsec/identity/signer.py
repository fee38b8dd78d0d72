"""What the application holds to act for a user: the identity keyring, never the database's copy."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from chatsec.errors import ChatsecError
from chatsec.identity.token import DEFAULT_LIFETIME_S, MAX_LIFETIME_S, mint
from chatsec.keys.keyring import Keyring, passphrase_from_env

IDENTITY_KEYRING_ENV = "CHATSEC_IDENTITY_KEYRING"


@dataclass(frozen=True)
class Signer:
    """Mints identity tokens with the identity keyring's active key.

    The keyring is a chatsec keyring file of its own (docs/identity.md), sealed with
    $CHATSEC_KEYRING_PASSPHRASE like the encryption keyring when that is set.
    """

    keyring: Keyring
    lifetime_s: float = DEFAULT_LIFETIME_S

    def __post_init__(self) -> None:
        if not 0 < self.lifetime_s <= MAX_LIFETIME_S:
            raise ChatsecError(
                f"identity token lifetime must be between 0 and {MAX_LIFETIME_S:g} s, "
                f"not {self.lifetime_s!r}"
            )

    def token(self, user_id: UUID) -> str:
        active = [k for k in self.keyring.keys if k.status == "active"]
        if not active:
            raise ChatsecError(
                f"identity keyring {self.keyring.path} has no active key: "
                "chatsec keys identity generate"
            )
        return mint(active[0], user_id, self.lifetime_s)

    @classmethod
    def load(cls, path: Path | str | None = None, lifetime_s: float = DEFAULT_LIFETIME_S) -> Signer:
        """The identity keyring at `path`, else at $CHATSEC_IDENTITY_KEYRING."""
        raw = path or os.environ.get(IDENTITY_KEYRING_ENV)
        if not raw:
            raise ChatsecError(
                f"no identity keyring: pass identity= to create_app_engine or set "
                f"{IDENTITY_KEYRING_ENV} (chatsec keys identity generate makes one)"
            )
        return cls(Keyring.load(Path(raw).expanduser(), passphrase_from_env()), lifetime_s)

    @classmethod
    def from_env(cls) -> Signer | None:
        """The signer of $CHATSEC_IDENTITY_KEYRING, None when it is not set."""
        return cls.load() if os.environ.get(IDENTITY_KEYRING_ENV) else None
