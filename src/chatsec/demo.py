"""The demo: sandbox, deploy, a small sample chat loaded through the application's own path."""

from __future__ import annotations

import shlex
import shutil
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

from chatsec.app import create_app_engine, user_transaction
from chatsec.app.chat import add_participant, create_thread, post_message, register_user
from chatsec.audit.api import audit
from chatsec.audit.report import render
from chatsec.db.url import DatabaseURL
from chatsec.identity import Signer
from chatsec.identity.manage import generate_identity_key, register_identity_keys
from chatsec.keys.keyring import Keyring, passphrase_from_env
from chatsec.keys.manage import generate_key, register_keys
from chatsec.migrate import runner
from chatsec.sandbox import IDENTITY_KEYRING_FILE, KEYRING_FILE, Sandbox

SAMPLE_USERS = ("alice", "bob", "carol")


def run_demo(directory: Path, say: Callable[[str], None]) -> int:
    """Run the demo; returns the audit's exit code (0 when every policy is in force)."""
    box = Sandbox(directory)
    box.start()
    urls = box.urls()
    say(f"1. sandbox running at {box.status().directory} (TLS only, verify-full)")
    migrator = DatabaseURL.parse(urls["migrator"])
    runner.deploy(migrator)
    state = runner.status(migrator)
    say(f"2. deployed the chat schema and policies: revision {', '.join(state.current)}")
    keyring = Keyring.load_or_empty(box.directory / KEYRING_FILE, passphrase_from_env())
    if not keyring.keys:
        generate_key(keyring, migrator)
    else:
        register_keys(keyring, migrator)
    say(f"   keyring {keyring.path} (mode 0600), active key {keyring.active.id}")
    identity = Keyring.load_or_empty(box.directory / IDENTITY_KEYRING_FILE, passphrase_from_env())
    if not identity.keys:
        generate_identity_key(identity, migrator)
    else:
        register_identity_keys(identity, migrator)
    say(
        f"   identity keyring {identity.path}: the application signs who acts "
        f"with key {identity.active.id}, the database verifies it"
    )
    engine = create_app_engine(urls["app"], identity=Signer(identity))
    try:
        ids = {name: uuid.uuid4() for name in SAMPLE_USERS}
        for name, uid in ids.items():
            with user_transaction(engine, uid, keyring) as conn:
                register_user(conn, uid, f"{name}-{uid.hex[:6]}@example.com", f"{name}_{uid.hex[:6]}")
        with user_transaction(engine, ids["alice"], keyring) as conn:
            thread = create_thread(conn, "alice and bob")
            add_participant(conn, thread, ids["bob"])
            first = post_message(conn, thread, "Hello Bob, this thread is private.")
        with user_transaction(engine, ids["bob"], keyring) as conn:
            post_message(conn, thread, "Hi Alice! Carol cannot see this.", parent_id=first)
        say("3. loaded a sample chat as the application login: 3 users, 1 thread, 2 messages")
        count = sa.text("SELECT count(*) FROM chat.messages WHERE thread_id = :t")
        for name, uid in ids.items():
            with user_transaction(engine, uid, keyring) as conn:
                seen = conn.execute(count, {"t": thread}).scalar_one()
            say(f"   {name} sees {seen} message(s) of the thread")
        with user_transaction(engine, ids["alice"], keyring) as conn:
            stored = conn.execute(
                sa.text("SELECT content FROM chat.messages WHERE id = :id"), {"id": first}
            ).scalar_one()
            read = conn.execute(
                sa.text("SELECT content FROM chat.messages_decrypted WHERE id = :id"), {"id": first}
            ).scalar_one()
        say("   stored in chat.messages (what disks, backups and dumps hold):")
        for line in str(stored).splitlines()[:3]:
            say(f"     {line}")
        say(f"   read through chat.messages_decrypted with the keyring: {read}")
    finally:
        engine.dispose()
    say("4. audit (as the auditor login, behavioural probes included):")
    report = audit(
        DatabaseURL.parse(urls["auditor"]),
        app_url=DatabaseURL.parse(urls["app"]),
        keyring=keyring.path,
        identity_keyring=identity.path,
    )
    say(render(report, "text", "error", color=False).rstrip("\n"))
    chatsec = shlex.quote(chatsec_command())
    where = shlex.quote(str(box.status().directory))
    say("5. the sandbox keeps running. Next, pasted as printed:")
    say(f'   eval "$({chatsec} sandbox env --dir {where})"   # URLs and keyrings of the sandbox')
    say('   psql "$CHATSEC_APP_DATABASE_URL"')
    say(f"   {chatsec} audit                          # again, as you like")
    say(f"   {chatsec} sandbox stop --dir {where}      # when done")
    return report.exit_code("error")


def chatsec_command() -> str:
    """How to run this chatsec from a shell: `chatsec` when it is on PATH, else its path."""
    found = shutil.which("chatsec")
    beside = Path(sys.executable).parent / "chatsec"
    if found and Path(found).resolve() == beside.resolve():
        return "chatsec"
    return str(beside) if beside.exists() else "chatsec"
