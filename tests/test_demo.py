"""`chatsec demo` end to end on a sandbox of its own: deploy, sample chat, audit passing."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from click.testing import CliRunner

from chatsec.cli.main import cli
from chatsec.sandbox import Sandbox


def test_demo_runs_end_to_end_and_its_audit_passes() -> None:
    directory = Path(tempfile.mkdtemp(dir="/var/tmp", prefix="chatsec-demo-"))
    try:
        result = CliRunner().invoke(cli, ["demo", "--dir", str(directory)])
        assert result.exit_code == 0, result.output
        out = result.output
        assert "carol sees 0 message(s)" in out and "bob sees 2 message(s)" in out
        assert "-----BEGIN PGP MESSAGE-----" in out
        assert "Hello Bob, this thread is private." in out
        assert "PASS" in out and " 0 failed" in out
        # Running it again is harmless: the sandbox and deployment are reused.
        again = CliRunner().invoke(cli, ["demo", "--dir", str(directory)])
        assert again.exit_code == 0, again.output
    finally:
        Sandbox(directory).stop()
        shutil.rmtree(directory, ignore_errors=True)
