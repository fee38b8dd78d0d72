"""Database URLs as users give them (libpq or SQLAlchemy style) and as each driver wants them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from chatsec.errors import ChatsecError

_SCHEMES = {"postgresql", "postgres", "postgresql+psycopg"}
# sslmode values that verify the server's certificate chain and host name.
VERIFYING_SSLMODES = {"verify-full"}


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed PostgreSQL URL; `libpq` is what psycopg takes, `sqlalchemy` what create_engine takes."""

    user: str | None
    password: str | None
    host: str | None
    port: int | None
    database: str | None
    query: dict[str, str]

    @classmethod
    def parse(cls, raw: str) -> DatabaseURL:
        parts = urlsplit(raw.strip())
        if parts.scheme not in _SCHEMES:
            raise ChatsecError(
                f"not a PostgreSQL URL (expected postgresql://user:password@host:port/dbname): "
                f"{redact(raw)}"
            )
        try:
            port = parts.port
        except ValueError as exc:
            raise ChatsecError(f"bad port in database URL {redact(raw)}: {exc}") from None
        database = unquote(parts.path.lstrip("/")) or None
        return cls(
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
            host=parts.hostname,
            port=port,
            database=database,
            query=dict(parse_qsl(parts.query)),
        )

    @property
    def sslmode(self) -> str:
        # libpq's default is "prefer", which silently falls back to plaintext.
        return self.query.get("sslmode", "prefer")

    def with_query(self, **params: str) -> DatabaseURL:
        return DatabaseURL(
            self.user, self.password, self.host, self.port, self.database, {**self.query, **params}
        )

    def with_database(self, database: str) -> DatabaseURL:
        return DatabaseURL(self.user, self.password, self.host, self.port, database, self.query)

    def with_credentials(self, user: str, password: str | None) -> DatabaseURL:
        return DatabaseURL(user, password, self.host, self.port, self.database, self.query)

    def _render(self, scheme: str, *, hide_password: bool = False) -> str:
        netloc = ""
        if self.user:
            netloc = quote(self.user, safe="")
            if self.password is not None:
                netloc += ":" + ("***" if hide_password else quote(self.password, safe=""))
            netloc += "@"
        if self.host:
            netloc += f"[{self.host}]" if ":" in self.host else self.host
        if self.port:
            netloc += f":{self.port}"
        path = "/" + quote(self.database, safe="") if self.database else ""
        return urlunsplit((scheme, netloc, path, urlencode(self.query), ""))

    @property
    def libpq(self) -> str:
        return self._render("postgresql")

    @property
    def sqlalchemy(self) -> str:
        return self._render("postgresql+psycopg")

    @property
    def redacted(self) -> str:
        return self._render("postgresql", hide_password=True)

    @property
    def target(self) -> str:
        """host:port/db, for messages."""
        return f"{self.host or 'localhost'}:{self.port or 5432}/{self.database or ''}"


def redact(raw: str) -> str:
    """The URL with any password replaced, safe to print."""
    try:
        parts = urlsplit(raw)
        if parts.password is None:
            return raw
        netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
        return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "<unparsable URL>"


def resolve_url(explicit: str | None, env_var: str = "CHATSEC_DATABASE_URL") -> DatabaseURL:
    """The URL from the command line, else from `env_var`; a clear error when neither is set."""
    raw = explicit or os.environ.get(env_var)
    if not raw:
        raise ChatsecError(
            f"no database URL: pass --database-url or set {env_var} "
            f'(for the sandbox: eval "$(chatsec sandbox env)")'
        )
    return DatabaseURL.parse(raw)
