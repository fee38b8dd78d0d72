"""Signed per-transaction identity: tokens chatsec.app mints, chat.current_user_id() verifies.

docs/identity.md has the scheme and its threat model.
"""

from chatsec.identity.signer import IDENTITY_KEYRING_ENV, Signer
from chatsec.identity.token import DEFAULT_LIFETIME_S, SETTING, mint

__all__ = ["DEFAULT_LIFETIME_S", "IDENTITY_KEYRING_ENV", "SETTING", "Signer", "mint"]
