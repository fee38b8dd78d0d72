"""`chatsec demo` end to end on a sandbox of its own: deploy, sample chat, audit passing."""

from __future__ import annotations

import shutil
import subprocess
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
        # The next steps work pasted as printed, from any shell: chatsec's own path when
        # it is not on PATH, and the sandbox's URLs and both keyrings come out of eval.
        assert "5. the sandbox keeps running" in out
        line = next(ln.strip() for ln in out.splitlines() if ln.strip().startswith("eval "))
        script = line.split("   #")[0] + (
            '; test -n "$CHATSEC_APP_DATABASE_URL" && test -f "$CHATSEC_KEYRING"'
            ' && test -f "$CHATSEC_IDENTITY_KEYRING"'
        )
        pasted = subprocess.run(["bash", "-c", script], env={"PATH": "/usr/bin:/bin"}, check=False)
        assert pasted.returncode == 0, line
        assert any("sandbox stop --dir" in ln for ln in out.splitlines())
        # Running it again is harmless: the sandbox and deployment are reused.
        again = CliRunner().invoke(cli, ["demo", "--dir", str(directory)])
        assert again.exit_code == 0, again.output
    finally:
        Sandbox(directory).stop()
        shutil.rmtree(directory, ignore_errors=True)
