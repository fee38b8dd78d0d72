"""The CLI's contract at its edges: one readable line, the documented exit code, and no
surprising effect (0 ok, 1 findings / drift / pending, 2 cannot run, 130 interrupted)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from chatsec import paths
from chatsec.cli.main import cli
from chatsec.db.connect import libpq_reason, mask_password
from chatsec.keys.keyring import Keyring
from chatsec.migrate import runner
from chatsec.policy.revision import next_revision_id
from tests.conftest import ChatDB
from tests.encryption_support import make_chat, post_all

PASSPHRASE = "correct-horse-battery-staple-9"


def _run(args: list[str], env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, args, env=env)


def _one_error_line(result: Result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("chatsec: error: ")
    return lines[0]


def _commands(group: click.Group, path: list[str]) -> list[tuple[list[str], click.Command]]:
    """Every command under `group` with its path of names (groups walked, not listed)."""
    ctx = click.Context(group)
    out = []
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        assert command is not None
        if isinstance(command, click.Group):
            out += _commands(command, [*path, name])
        else:
            out.append(([*path, name], command))
    return out


# --- errors: whole, readable, password-free --------------------------------------------


def test_a_refused_connection_keeps_libpq_whole_reason_and_no_mangled_words() -> None:
    url = "postgresql://u:a@127.0.0.1:1/chat?sslmode=verify-full"
    result = _run(["status", "--database-url", url])
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert line.endswith(
        "Connection refused Is the server running on that host and accepting TCP/IP connections?"
    )


def test_a_multi_line_libpq_reason_is_kept_whole() -> None:
    exc = Exception(
        'connection failed: connection to server at "10.0.0.1", port 5432 failed: FATAL:  x\n'
        'connection to server at "10.0.0.2", port 5432 failed: server closed the connection '
        "unexpectedly\n\tThis probably means the server terminated abnormally\n"
        "\tbefore or while processing the request."
    )
    assert libpq_reason(exc) == (
        "server closed the connection unexpectedly This probably means the server "
        "terminated abnormally before or while processing the request."
    )


@pytest.mark.parametrize(
    ("text", "password", "masked"),
    [
        ("accepting TCP/IP", "a", "accepting TCP/IP"),  # a short password: words stay whole
        ("postgresql://u:a@host/db failed", "a", "postgresql://u:***@host/db failed"),
        ("password=a host=h", "a", "password=*** host=h"),
        ("echoed s3cret-passw0rd here", "s3cret-passw0rd", "echoed *** here"),
        ("postgresql://u:p%40ss%2Fword1@h", "p@ss/word1", "postgresql://u:***@h"),
    ],
)
def test_only_the_password_is_masked(text: str, password: str, masked: str) -> None:
    assert mask_password(text, password) == masked


# --- exit codes --------------------------------------------------------------------------


def test_plan_on_an_empty_or_partly_deployed_database_is_drift(empty_db: ChatDB) -> None:
    env = {"CHATSEC_DATABASE_URL": empty_db.migrator.libpq}
    empty = _run(["plan"], env)
    assert empty.exit_code == 1, empty.output
    assert "missing  table              chat.messages: table does not exist" in empty.output
    runner.deploy(empty_db.migrator, "0003")
    partly = _run(["plan"], env)
    assert partly.exit_code == 1, partly.output
    assert "difference(s) from policies/" in partly.output.splitlines()[-1]


def test_deploy_goes_only_up_and_rollback_only_down(empty_db: ChatDB) -> None:
    env = {"CHATSEC_DATABASE_URL": empty_db.migrator.libpq}
    runner.deploy(empty_db.migrator, "0005")
    target = empty_db.migrator.target
    cases = [
        (["deploy", "--to", "0003"], f"{target} is at 0005, newer than 0003: deploy only goes up"),
        (
            ["rollback", "--to", "0007"],
            f"{target} is at 0005, older than 0007: rollback only goes down",
        ),
        (["rollback", "--to", "head"], f"{target} is at 0005, older than head"),
        (["rollback", "--to", "0005"], f"{target} is at 0005 already: nothing to roll back"),
        (["deploy", "--to", "0099"], "unknown revision '0099': expected base, head or one of 0001"),
    ]
    for args, message in cases:
        result = _run(args, env)
        assert result.exit_code == 2, (args, result.output)
        assert message in _one_error_line(result)
        assert runner.status(empty_db.migrator).current == ("0005",)
    same = _run(["deploy", "--to", "0005"], env)
    assert same.exit_code == 0 and "0005 -> 0005" in same.output
    down = _run(["rollback", "--to", "0004"], env)
    assert down.exit_code == 0 and runner.status(empty_db.migrator).current == ("0004",)


def test_an_interrupted_command_exits_130_and_says_how_to_go_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*_args: object, **_kwargs: object) -> None:
        raise KeyboardInterrupt  # what Ctrl-C raises in the middle of the command

    monkeypatch.setattr(runner, "status", interrupted)
    result = _run(["status", "--database-url", "postgresql://u@h/db?sslmode=verify-full"])
    assert result.exit_code == 130
    assert result.output.strip() == (
        "chatsec: interrupted: what was committed stays; run the same command again to "
        "resume or redo it"
    )


# --- the sandbox touches only what is its own ---------------------------------------------


def test_stopping_where_no_sandbox_is_is_refused(tmp_path: Path) -> None:
    result = _run(["sandbox", "stop", "--dir", str(tmp_path / "never")])
    assert result.exit_code == 2
    assert _one_error_line(result) == (
        f"chatsec: error: no sandbox at {tmp_path / 'never'}: nothing to stop"
    )
    assert not (tmp_path / "never").exists()


def test_starting_in_someone_elses_directory_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o750)
    (theirs / "notes.txt").write_text("mine")
    before = (theirs.stat().st_mode, sorted(p.name for p in theirs.iterdir()))
    result = _run(["sandbox", "start", "--dir", str(theirs)])
    assert result.exit_code == 2
    assert "is not empty and holds no chatsec sandbox: nothing was changed" in (
        _one_error_line(result)
    )
    assert (theirs.stat().st_mode, sorted(p.name for p in theirs.iterdir())) == before


# --- keys --------------------------------------------------------------------------------


def test_unseal_round_trips_and_refuses_a_plain_keyring(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    keyring = Keyring.empty(path)
    key = keyring.generate()
    keyring.save()
    env = {"CHATSEC_KEYRING": str(path), "CHATSEC_KEYRING_PASSPHRASE": PASSPHRASE}
    assert _run(["keys", "seal"], env).exit_code == 0
    assert '"sealed"' in path.read_text()
    unsealed = _run(["keys", "unseal"], env)
    assert unsealed.exit_code == 0, unsealed.output
    assert '"sealed"' not in path.read_text()
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert Keyring.load(path).get(key.id).material == key.material
    again = _run(["keys", "unseal"], env)
    assert again.exit_code == 2
    assert (
        _one_error_line(again) == f"chatsec: error: keyring {path} is not sealed: nothing to unseal"
    )
    no_passphrase = _run(["keys", "unseal"], {"CHATSEC_KEYRING": str(path)})
    assert no_passphrase.exit_code == 2


# --- revisions ---------------------------------------------------------------------------


def test_a_new_revision_continues_the_chain_even_in_an_empty_directory(tmp_path: Path) -> None:
    head = runner.revisions()[-1]
    assert next_revision_id(tmp_path, head) == f"{int(head) + 1:04d}"
    (tmp_path / f"{int(head) + 3:04d}_later.py").write_text("")
    assert next_revision_id(tmp_path, head) == f"{int(head) + 4:04d}"


def test_revision_never_writes_into_an_installed_package(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # What an installed wheel looks like: versions/ shipped under the package's _data/.
    shipped = tmp_path / "site-packages" / "chatsec" / "_data" / "versions"
    shipped.mkdir(parents=True)
    shutil.copytree(paths.policies_dir(), shipped.parent / "policies")
    monkeypatch.setattr(paths, "_PACKAGE", tmp_path / "site-packages" / "chatsec")
    assert paths.checkout_versions_dir() is None
    result = _run(
        ["revision", "-m", "x", "--database-url", "postgresql://u@h/db?sslmode=verify-full"],
        {"CHATSEC_ADMIN_DATABASE_URL": "postgresql://u@h/db?sslmode=verify-full"},
    )
    assert result.exit_code == 2
    assert "never goes into it; pass --versions DIR" in _one_error_line(result)
    assert list(shipped.iterdir()) == []


def test_rotation_after_generate_does_not_say_resuming(deployed_db: ChatDB, tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    post_all(make_chat(deployed_db, path), ["one", "two"])  # under the first key
    env = {"CHATSEC_DATABASE_URL": deployed_db.migrator.libpq, "CHATSEC_KEYRING": str(path)}
    assert _run(["keys", "generate"], env).exit_code == 0  # the documented order
    result = _run(["keys", "rotate", "--no-vacuum"], env)
    assert result.exit_code == 0, result.output
    active = Keyring.load(path).active.id
    assert f"rotating to the active key {active}: 2 row(s) to re-encrypt" in result.output
    assert "resuming" not in result.output


# --- reports for machines: --format json, history, current, rollback --sql ----------------


def test_status_current_and_history_for_people_and_machines(empty_db: ChatDB) -> None:
    env = {"CHATSEC_DATABASE_URL": empty_db.migrator.libpq}
    chain = runner.revisions()
    runner.deploy(empty_db.migrator, "0004")
    status = _run(["status", "--format", "json"], env)
    assert status.exit_code == 1  # pending
    document = json.loads(status.output)
    assert document["current"] == ["0004"] and document["up_to_date"] is False
    assert document["pending"] == chain[4:] and document["heads"] == [chain[-1]]
    assert _run(["current"], env).output.strip() == "0004"
    assert json.loads(_run(["current", "--format", "json"], env).output)["current"] == ["0004"]
    history = json.loads(_run(["history", "--format", "json"]).output)
    assert [h["revision"] for h in history] == chain
    assert [h["down_revision"] for h in history] == [None, *chain[:-1]]
    assert [h["head"] for h in history] == [False] * (len(chain) - 1) + [True]
    assert all(h["message"] for h in history)
    text = _run(["history"]).output.splitlines()
    assert text[0].startswith("base -> 0001, ") and text[-1].startswith(
        f"{chain[-2]} -> {chain[-1]} (head), "
    )


def test_plan_and_keys_status_as_json(
    deployed_db: ChatDB, empty_db: ChatDB, tmp_path: Path
) -> None:
    in_sync = _run(
        ["plan", "--format", "json"], {"CHATSEC_DATABASE_URL": deployed_db.migrator.libpq}
    )
    assert in_sync.exit_code == 0
    assert json.loads(in_sync.output) == {
        "database": deployed_db.migrator.target,
        "in_sync": True,
        "changes": [],
    }
    drift = _run(["plan", "--format", "json"], {"CHATSEC_DATABASE_URL": empty_db.migrator.libpq})
    assert drift.exit_code == 1
    changes = json.loads(drift.output)["changes"]
    missing = next(c for c in changes if c["object"] == "chat.messages" and c["kind"] == "table")
    assert missing["action"] == "missing" and missing["sql"] == []
    path = tmp_path / "k.json"
    post_all(make_chat(deployed_db, path), ["one"])
    env = {"CHATSEC_DATABASE_URL": deployed_db.migrator.libpq, "CHATSEC_KEYRING": str(path)}
    keys = json.loads(_run(["keys", "status", "--format", "json"], env).output)
    active = Keyring.load(path).active.id
    assert keys["keyring"] == str(path) and keys["rotation"] is None
    assert {"id": active, "keyring": "active", "registered": "yes", "rows": 1} in keys["keys"]
    database_only = _run(["keys", "status"], {"CHATSEC_DATABASE_URL": deployed_db.migrator.libpq})
    assert database_only.exit_code == 0 and "missing" not in database_only.output
    assert "no keyring given" in database_only.output
    # Not a terminal: plain aligned columns, no box, every id whole on its line.
    text = _run(["keys", "status"], env).output
    assert not set("┏┃━│└") & set(text)
    assert any(line.split()[:2] == [active, "active"] for line in text.splitlines())


def test_rollback_sql_prints_the_downgrade_and_changes_nothing(empty_db: ChatDB) -> None:
    env = {"CHATSEC_DATABASE_URL": empty_db.migrator.libpq}
    runner.deploy(empty_db.migrator, "0011")
    result = _run(["rollback", "--to", "0010", "--sql"], env)
    assert result.exit_code == 0, result.output
    assert "DROP TABLE chat.identity_keys" in result.output
    assert "UPDATE public.alembic_version SET version_num='0010'" in result.output
    assert runner.status(empty_db.migrator).current == ("0011",)
    up = _run(["rollback", "--to", "head", "--sql"], env)
    assert up.exit_code == 2 and "would not go down" in _one_error_line(up)


def test_a_url_without_password_reads_it_from_the_password_file(
    shared_deployed_db: ChatDB, tmp_path: Path
) -> None:
    url = shared_deployed_db.migrator
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{url.host}:{url.port}:{url.database}:{url.user}:{url.password}\n")
    passfile.chmod(0o600)
    bare = url.with_credentials(url.user or "", None)
    assert bare.password is None and "@" in bare.libpq and ":" + str(url.password) not in bare.libpq
    without = _run(["current"], {"CHATSEC_DATABASE_URL": bare.libpq, "PGPASSFILE": "/nonexistent"})
    assert without.exit_code == 2
    result = _run(["current"], {"CHATSEC_DATABASE_URL": bare.libpq, "PGPASSFILE": str(passfile)})
    assert result.exit_code == 0, result.output
    assert result.output.strip() == runner.revisions()[-1]


# --- startup: help and completion import no database stack ------------------------------


def test_every_command_is_listed_with_its_own_help_line() -> None:
    from chatsec.cli.main import LAZY_COMMANDS

    ctx = click.Context(cli)
    for name, (_, help_line) in LAZY_COMMANDS.items():
        command = cli.get_command(ctx, name)
        assert command is not None and command.name == name
        assert command.get_short_help_str(limit=500) == help_line, name


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (None, "Commands:"),  # chatsec --help
        ("chatsec ke", "plain,keys"),
        ("chatsec keys st", "plain,status"),
        ("chatsec keys identity re", "plain,register"),
        ("chatsec sandbox st", "plain,start"),
        ("chatsec deploy --", "plain,--to"),
        ("chatsec plan --", "plain,--format"),
        ("chatsec status --", "plain,--format"),
        ("chatsec audit --", "plain,--identity-keyring"),
        ("chatsec backup --", "plain,--output"),
        ("chatsec restore --", "plain,--create"),
        ("chatsec bench --", "plain,--quick"),
        ("chatsec demo --", "plain,--dir"),
        ("chatsec doctor --", "plain,--format"),
        ("chatsec ssl verify --", "plain,--min-days"),
    ],
)
def test_help_and_completion_import_no_database_stack(words: str | None, expected: str) -> None:
    # What makes `chatsec --help` and a shell completion take seconds is importing psycopg,
    # SQLAlchemy and Alembic: none of these may need them (timings belong in benchmarks).
    env = dict(os.environ)
    argv = ["chatsec", "--help"]
    if words is not None:
        argv = ["chatsec"]
        env |= {
            "_CHATSEC_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - 1),
        }
    code = (
        "import sys\n"
        "from chatsec.cli.main import main\n"
        f"sys.argv = {argv!r}\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('psycopg', 'sqlalchemy', 'alembic') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert "HEAVY []" in result.stdout, result.stdout
    assert expected in result.stdout


def test_every_command_says_its_exit_codes_in_its_help() -> None:
    found = _commands(cli, [])
    assert len(found) > 30
    missing = [" ".join(path) for path, command in found if "Exit" not in (command.help or "")]
    assert missing == []


def test_every_environment_variable_a_command_reads_is_in_its_help() -> None:
    missing = []
    for path, _command in _commands(cli, []):
        text = _run([*path, "--help"]).output
        needs = []
        # ssl verify checks the server's TLS itself, whatever the URL's sslmode.
        connects = path != ["ssl", "verify"]
        if connects and ("--database-url" in text or "--app-url" in text or "--admin-url" in text):
            needs.append("CHATSEC_ALLOW_INSECURE_TLS")
        if "--keyring" in text or "--identity-keyring" in text:
            needs.append("CHATSEC_KEYRING_PASSPHRASE")
        if "--identity-keyring" in text:
            needs.append("CHATSEC_IDENTITY_KEYRING")
        missing += [f"{' '.join(path)}: {var}" for var in needs if var not in text]
    assert missing == []


def test_the_audit_text_report_on_a_pipe_is_plain_rows(deployed_db: ChatDB, tmp_path: Path) -> None:
    env = {"CHATSEC_AUDIT_DATABASE_URL": deployed_db.auditor.libpq}
    piped = _run(["audit", "--no-probe", "--check", "rls-enabled", "--check", "roles-match"], env)
    assert piped.exit_code == 0, piped.output
    assert not set("┏┃━│└─") & set(piped.output)
    rows = [line.split() for line in piped.output.splitlines()]
    assert next(r[:2] for r in rows if "rls-enabled" in r) == ["passed", "rls-enabled"]
    # A file keeps the boxed report people read.
    out = tmp_path / "report.txt"
    filed = _run(["audit", "--no-probe", "--check", "rls-enabled", "--output", str(out)], env)
    assert filed.exit_code == 0 and "│" in out.read_text()
