"""One real sandbox cluster per test session; each test gets its own database."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from chatsec.db.url import DatabaseURL
from chatsec.identity import IDENTITY_KEYRING_ENV, Signer
from chatsec.identity.manage import register_identity_keys
from chatsec.keys.keyring import Keyring
from chatsec.migrate import runner
from chatsec.sandbox import Sandbox
from tests.chat_fixtures import SeededChat, seed_chat

TEMPLATE = "chatsec_template_head"


@dataclass(frozen=True)
class ChatDB:
    """A database of the session sandbox, with URLs for each of the sandbox's logins."""

    name: str
    sandbox: Sandbox

    def url(self, login: str = "migrator") -> DatabaseURL:
        return DatabaseURL.parse(self.sandbox.url_for(login, self.name))

    @property
    def migrator(self) -> DatabaseURL:
        return self.url("migrator")

    @property
    def app(self) -> DatabaseURL:
        return self.url("app")

    @property
    def auditor(self) -> DatabaseURL:
        return self.url("auditor")

    @property
    def admin(self) -> DatabaseURL:
        return self.url("admin")


def scratch_sandbox(prefix: str = "chatsec-scratch-", archive: bool = False) -> Iterator[Sandbox]:
    """A started sandbox in a new directory, stopped and removed afterwards (yield from it)."""
    # /var/tmp, not pytest's tmp_path: the server runs as `postgres`, which cannot
    # traverse root's 0700 pytest directories.
    box = Sandbox(Path(tempfile.mkdtemp(dir="/var/tmp", prefix=prefix)))
    box.start(archive=archive)
    try:
        yield box
    finally:
        box.stop()
        shutil.rmtree(box.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def sandbox() -> Iterator[Sandbox]:
    """The session's cluster, shared by every test that needs only a database of its own."""
    yield from scratch_sandbox("chatsec-session-")


def _new_db(sandbox: Sandbox, template: str | None = None) -> ChatDB:
    name = f"t_{secrets.token_hex(5)}"
    sandbox.create_database(name, template=template)
    return ChatDB(name, sandbox)


@pytest.fixture()
def empty_db(sandbox: Sandbox) -> Iterator[ChatDB]:
    """A fresh, empty database owned by the migrator login."""
    db = _new_db(sandbox)
    yield db
    sandbox.drop_database(db.name)


@pytest.fixture(scope="session", autouse=True)
def identity_keyring(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Keyring]:
    """The session's identity keyring, where chatsec.app finds it: $CHATSEC_IDENTITY_KEYRING.

    Every engine create_app_engine() makes signs its transactions with it; databases
    copied from the head template have its key registered (register_identity).
    """
    keyring = Keyring.empty(tmp_path_factory.mktemp("identity") / "identity-keyring.json")
    keyring.generate()
    keyring.save()
    before = os.environ.get(IDENTITY_KEYRING_ENV)
    os.environ[IDENTITY_KEYRING_ENV] = str(keyring.path)
    yield keyring
    if before is None:
        os.environ.pop(IDENTITY_KEYRING_ENV, None)
    else:
        os.environ[IDENTITY_KEYRING_ENV] = before


def identity_token(user: uuid.UUID | None) -> str:
    """A fresh signed identity token for `user` from the session's identity keyring ('' for None):
    what a test on a raw app-login connection sets as app.identity."""
    if user is None:
        return ""
    return Signer.load().token(user)


def set_identity(conn: psycopg.Connection[Any], user: uuid.UUID | None) -> None:
    """Act as `user` for the rest of the transaction, as chatsec.app does (None: nobody)."""
    conn.execute("SELECT pg_catalog.set_config('app.identity', %s, true)", (identity_token(user),))


def register_identity(url: DatabaseURL) -> None:
    """Register the session's identity key in a database deployed to head (0011 or later)."""
    path = os.environ[IDENTITY_KEYRING_ENV]
    register_identity_keys(Keyring.load(Path(path)), url)


def deployed_chat(box: Sandbox) -> ChatDB:
    """`box`'s own `chat` database, deployed to head with the session's identity key."""
    url = DatabaseURL.parse(box.url_for("migrator"))
    runner.deploy(url)
    register_identity(url)
    return ChatDB("chat", box)


@pytest.fixture(scope="session")
def head_template(sandbox: Sandbox, identity_keyring: Keyring) -> str:
    """A database deployed to head once, copied by `deployed_db` (CREATE DATABASE ... TEMPLATE)."""
    sandbox.create_database(TEMPLATE)
    url = DatabaseURL.parse(sandbox.url_for("migrator", TEMPLATE))
    runner.deploy(url)
    register_identity(url)
    return TEMPLATE


@pytest.fixture()
def deployed_db(sandbox: Sandbox, head_template: str) -> Iterator[ChatDB]:
    """A fresh database at head."""
    db = _new_db(sandbox, head_template)
    yield db
    sandbox.drop_database(db.name)


@pytest.fixture(scope="module")
def shared_deployed_db(sandbox: Sandbox, head_template: str) -> Iterator[ChatDB]:
    """A database at head shared by one module whose tests roll back what they do."""
    db = _new_db(sandbox, head_template)
    yield db
    sandbox.drop_database(db.name)


@pytest.fixture(scope="module")
def chat(shared_deployed_db: ChatDB) -> SeededChat:
    """The known chat of tests.chat_fixtures in the module's shared database."""
    with shared_deployed_db.sandbox.admin_connect(shared_deployed_db.name) as conn:
        return seed_chat(conn)
