"""Connections to PostgreSQL: URL handling, TLS requirements and error translation."""

from chatsec.db.connect import connect, describe_connect_error
from chatsec.db.url import DatabaseURL, resolve_url

__all__ = ["DatabaseURL", "connect", "describe_connect_error", "resolve_url"]
