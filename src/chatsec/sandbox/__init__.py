"""A local, TLS-only PostgreSQL sandbox for development and tests."""

from chatsec.sandbox.binaries import find_bindir
from chatsec.sandbox.cluster import (
    ENV_VARS,
    IDENTITY_KEYRING_FILE,
    KEYRING_FILE,
    LOGINS,
    Sandbox,
    SandboxStatus,
)

__all__ = [
    "ENV_VARS",
    "IDENTITY_KEYRING_FILE",
    "KEYRING_FILE",
    "LOGINS",
    "Sandbox",
    "SandboxStatus",
    "find_bindir",
]
