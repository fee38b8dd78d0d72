"""One real sandbox cluster per test session; each test gets its own database."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatsec.db.url import DatabaseURL
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


@pytest.fixture(scope="session")
def head_template(sandbox: Sandbox) -> str:
    """A database deployed to head once, copied by `deployed_db` (CREATE DATABASE ... TEMPLATE)."""
    sandbox.create_database(TEMPLATE)
    runner.deploy(DatabaseURL.parse(sandbox.url_for("migrator", TEMPLATE)))
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
