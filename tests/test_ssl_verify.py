"""`chatsec ssl verify` against a real server: clean, expired and wrong-host certificates."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chatsec.cli.main import cli
from chatsec.db.url import DatabaseURL
from chatsec.sandbox import Sandbox
from chatsec.tls.certs import PemPair, make_server_cert
from chatsec.tls.verify import fetch_chain, verify_server
from tests.audit_support import failing, reload, write_server_file
from tests.conftest import scratch_sandbox


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    yield from scratch_sandbox()


def _url(box: Sandbox) -> DatabaseURL:
    return DatabaseURL.parse(box.url_for("auditor", "postgres"))


@pytest.fixture()
def serve_cert(box: Sandbox) -> Iterator[Any]:
    """Install a server certificate signed by the sandbox CA; the original is put back after."""
    crt, key = box.tls_dir / "server.crt", box.tls_dir / "server.key"
    original = (crt.read_bytes(), key.read_bytes())
    ca = PemPair((box.tls_dir / "ca.crt").read_bytes(), (box.tls_dir / "ca.key").read_bytes())

    def install(pair: PemPair) -> None:
        box._write_file(crt, pair.cert, 0o644, server_owned=False)  # noqa: SLF001
        write_server_file(box, key, pair.key)
        from cryptography import x509

        serial = x509.load_pem_x509_certificate(pair.cert).serial_number
        host, port = _url(box).host or "", _url(box).port or 5432
        reload(box, lambda: fetch_chain(host, port).chain[0].serial_number == serial)

    def make(**kwargs: Any) -> None:
        install(make_server_cert(ca, **kwargs))

    yield make
    install(PemPair(*original))


def test_clean_sandbox_passes_every_check(box: Sandbox) -> None:
    result = verify_server(_url(box))
    assert failing(result.report) == set()
    assert all(r.status == "passed" for r in result.report.results)
    assert result.details["protocol"] == "TLSv1.3"
    assert result.details["pg_stat_ssl"]["ssl"] is True
    assert result.details["keys"][0].startswith("ECDSA secp256r1")
    assert result.details["chain_length"] >= 1


def test_expired_certificate_fires_ssl_expiry(box: Sandbox, serve_cert: Any) -> None:
    serve_cert(not_after=datetime.now(UTC) - timedelta(days=1))
    result = verify_server(_url(box))
    assert failing(result.report) == {"ssl-expiry"}
    # libpq refuses it too; that is the same fault, reported as a skip naming it.
    session = next(r for r in result.report.results if r.check_id == "ssl-session")
    assert session.status == "skipped" and "ssl-expiry" in (session.skip_reason or "")


def test_wrong_host_certificate_fires_ssl_hostname(box: Sandbox, serve_cert: Any) -> None:
    serve_cert(hosts=("db.example.invalid",))
    result = verify_server(_url(box))
    assert failing(result.report) == {"ssl-hostname"}


def test_soon_expiring_certificate_is_a_warning(box: Sandbox, serve_cert: Any) -> None:
    serve_cert(days=10)
    result = verify_server(_url(box), min_days=30)
    expiry = next(r for r in result.report.results if r.check_id == "ssl-expiry")
    assert [f.level for f in expiry.findings] == ["warning"]
    assert result.report.exit_code("error") == 0 and result.report.exit_code("warning") == 1


def test_untrusted_ca_fires_ssl_chain(box: Sandbox, tmp_path: Path) -> None:
    from chatsec.tls.certs import make_ca

    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_ca("someone else").cert)
    result = verify_server(_url(box), rootcert=other)
    assert "ssl-chain" in failing(result.report)


def test_cli_json_and_exit_codes(box: Sandbox) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        cli, ["ssl", "verify", "--database-url", _url(box).libpq, "--format", "json"], env={}
    )
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.output)
    assert doc["summary"]["failed"] == 0 and doc["tls"]["protocol"] == "TLSv1.3"
    text = runner.invoke(cli, ["ssl", "verify", "--database-url", _url(box).libpq], env={})
    assert text.exit_code == 0 and "ssl-hostname" in text.output
    bad = runner.invoke(
        cli, ["ssl", "verify", "--database-url", "postgresql://u@127.0.0.1:1/x"], env={}
    )
    assert bad.exit_code == 2 and "cannot reach 127.0.0.1:1" in bad.output
