"""Encryption keys for pgcrypto, kept in a keyring file (see docs/keyring.md)."""

from chatsec.keys.keyring import (
    KEYRING_ENV,
    PASSPHRASE_ENV,
    Key,
    Keyring,
    Status,
    passphrase_from_env,
    resolve_keyring_path,
)

__all__ = [
    "KEYRING_ENV",
    "PASSPHRASE_ENV",
    "Key",
    "Keyring",
    "Status",
    "passphrase_from_env",
    "resolve_keyring_path",
]
