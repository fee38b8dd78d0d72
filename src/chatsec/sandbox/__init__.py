"""A local, TLS-only PostgreSQL sandbox for development and tests."""

from chatsec.sandbox.binaries import find_bindir
from chatsec.sandbox.cluster import ENV_VARS, LOGINS, Sandbox, SandboxStatus

__all__ = ["ENV_VARS", "LOGINS", "Sandbox", "SandboxStatus", "find_bindir"]
