"""Defaults the CLI shows in --help, in a leaf module: reading them loads no database driver."""

# How long a command waits for another command's lock (database or keyring file).
DEFAULT_WAIT_S = 30.0
# Rows per transaction of `chatsec keys rotate`.
DEFAULT_BATCH_SIZE = 500
# `chatsec restore`'s flag that accepts a dump without a verifiable manifest.
ACCEPT_UNSIGNED_FLAG = "--accept-unsigned"
