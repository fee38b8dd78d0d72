"""TLS from the outside: `ssl verify` and the audit try every version, suite and group for real."""

from __future__ import annotations

import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from psycopg import sql

from chatsec.audit.api import audit
from chatsec.audit.check import Skip
from chatsec.audit.checks import tls_cipher_settings, tls_cipher_suites
from chatsec.audit.context import AuditContext, ProbeConfig
from chatsec.audit.runner import AuditReport, run_check
from chatsec.audit.tls_probe import (
    ProbeError,
    admitted_suites,
    client_context,
    known_suites,
    probe_server,
)
from chatsec.cli.main import cli
from chatsec.db.connect import connect
from chatsec.db.url import DatabaseURL
from chatsec.policy.load import load_policies
from chatsec.sandbox import Sandbox
from chatsec.tls.certs import make_ca
from chatsec.tls.verify import verify_server
from tests.audit_support import result
from tests.conftest import deployed_chat, scratch_sandbox

SAFE_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
AUDIT_CHECKS = ["tls-cipher-suites", "tls-cipher-settings"]
Configure = Callable[..., None]


@pytest.fixture(scope="module")
def box() -> Iterator[Sandbox]:
    """A scratch cluster (its settings get changed), deployed so the auditor reads settings."""
    sandboxes = scratch_sandbox("chatsec-tlsprobe-")
    sandbox = next(sandboxes)
    try:
        deployed_chat(sandbox)
        yield sandbox
    finally:
        sandboxes.close()  # stops the server and removes its directory


def _show(box: Sandbox, names: list[str]) -> dict[str, str]:
    # A new session: it sees what the postmaster has loaded, SSL context included.
    shown = {}
    with box.admin_connect() as conn:
        for name in names:
            row = conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(name))).fetchone()
            shown[name] = "" if row is None else str(row[0])
    return shown


def _wait_for(box: Sandbox, wanted: dict[str, str], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while _show(box, list(wanted)) != wanted:
        if time.monotonic() > deadline:
            raise AssertionError(f"the server did not load {wanted}")
        time.sleep(0.05)


@pytest.fixture()
def configure(box: Sandbox) -> Iterator[Configure]:
    """ALTER SYSTEM (postgresql.auto.conf wins over chatsec.conf) and reload; undone after."""
    changed: dict[str, str] = {}

    def apply(**settings: str) -> None:
        for name in settings:
            changed.setdefault(name, _show(box, [name])[name])
        with box.admin_connect() as conn:
            for name, value in settings.items():
                conn.execute(
                    sql.SQL("ALTER SYSTEM SET {} = {}").format(
                        sql.Identifier(name), sql.Literal(value)
                    )
                )
            conn.execute("SELECT pg_catalog.pg_reload_conf()")
        _wait_for(box, settings)

    yield apply
    with box.admin_connect() as conn:
        for name in changed:
            conn.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
        conn.execute("SELECT pg_catalog.pg_reload_conf()")
    _wait_for(box, changed)


def _auditor(box: Sandbox) -> DatabaseURL:
    return DatabaseURL.parse(box.url_for("auditor"))


def _audit(box: Sandbox) -> AuditReport:
    return audit(_auditor(box), check_ids=AUDIT_CHECKS, probe=True)


def _problems(report: AuditReport, check_id: str) -> list[Any]:
    return [f for f in result(report, check_id).findings if f.level != "info"]


def _server_key_is_ecdsa(box: Sandbox) -> bool:
    cert = x509.load_pem_x509_certificate((box.tls_dir / "server.crt").read_bytes())
    return isinstance(cert.public_key(), ec.EllipticCurvePublicKey)


def _auth(box: Sandbox) -> str:
    # The certificate's key type decides which suites the server can use at all
    # (certs.py makes ECDSA P-256 keys today).
    return "ECDSA" if _server_key_is_ecdsa(box) else "RSA"


def _cbc_suite(box: Sandbox) -> str:
    return f"ECDHE-{_auth(box)}-AES128-SHA"


def _verify_cli(box: Sandbox, *extra: str) -> Any:
    return CliRunner().invoke(
        cli, ["ssl", "verify", "--database-url", _auditor(box).libpq, *extra], env={}
    )


# -- classification, no server ------------------------------------------------------------


def _local(name: str) -> Any:
    suites = {s.name: s for s in known_suites(ssl.TLSVersion.TLSv1_2)}
    if name not in suites:
        pytest.skip(f"the local OpenSSL ({ssl.OPENSSL_VERSION}) does not know {name}")
    return suites[name]


@pytest.mark.parametrize(
    ("name", "level", "because"),
    [
        ("ECDHE-ECDSA-AES128-GCM-SHA256", None, ""),
        ("ECDHE-RSA-CHACHA20-POLY1305", None, ""),
        ("DHE-RSA-AES256-GCM-SHA384", None, ""),
        ("ECDHE-ECDSA-AES128-CCM", None, ""),
        ("ECDHE-ECDSA-AES128-SHA", "error", "CBC"),
        ("ECDHE-ECDSA-CAMELLIA128-SHA256", "error", "CBC"),
        ("AES256-SHA", "error", "forward secrecy"),
        ("AES128-GCM-SHA256", "error", "forward secrecy"),
        ("ECDHE-ECDSA-AES128-CCM8", "error", "CCM_8"),
        ("ADH-AES128-GCM-SHA256", "error", "anonymous"),
        ("ECDHE-ECDSA-NULL-SHA", "error", "NULL"),
        ("ECDHE-ECDSA-ARIA128-GCM-SHA256", "warning", "aria"),
    ],
)
def test_suite_classification(name: str, level: str | None, because: str) -> None:
    weakness = _local(name).weakness()
    if level is None:
        assert weakness is None
    else:
        assert weakness is not None and weakness[0] == level and because in weakness[1]


def test_suite_lists_per_version_and_setting_expansion() -> None:
    tls10 = {s.name for s in known_suites(ssl.TLSVersion.TLSv1)}
    tls12 = {s.name for s in known_suites(ssl.TLSVersion.TLSv1_2)}
    assert tls10 and tls10 < tls12
    assert not any("GCM" in n or "PSK" in n or "SRP" in n for n in tls10)  # 1.2-only / no creds
    assert all(s.weakness() is None for s in admitted_suites(SAFE_CIPHERS))
    default = {s.name: s for s in admitted_suites("HIGH:MEDIUM:+3DES:!aNULL")}
    assert {"ECDHE-ECDSA-AES128-SHA", "AES256-SHA", "ECDHE-ECDSA-AES128-CCM8"} <= set(default)
    assert not any(s.authentication == "auth-null" for s in default.values())


CLEAN_SETTINGS = {
    "ssl": "on",
    "ssl_ciphers": SAFE_CIPHERS,
    "ssl_prefer_server_ciphers": "on",
    "ssl_min_protocol_version": "TLSv1.3",
    "ssl_max_protocol_version": "",
    "ssl_ecdh_curve": "prime256v1",
}


def _settings_findings(settings: dict[str, str]) -> list[tuple[str, str]]:
    """tls-cipher-settings on these pg_settings values (no server: it reads only settings)."""
    url = DatabaseURL.parse("postgresql://auditor@127.0.0.1:5432/chat")
    ctx = AuditContext(None, url, load_policies(None), _settings=settings)  # type: ignore[arg-type]
    return [(f.object, f.level) for f in tls_cipher_settings.CHECK.run(ctx)]


def _with(**overrides: str) -> list[tuple[str, str]]:
    return _settings_findings(CLEAN_SETTINGS | overrides)


def test_settings_check_reads_each_setting() -> None:
    assert _with() == []
    weak = "HIGH:MEDIUM:+3DES:!aNULL"
    # ssl_ciphers has no say in TLS 1.3: only a note while TLS 1.2 is not allowed.
    assert _with(ssl_ciphers=weak) == [("setting ssl_ciphers", "info")]
    assert ("setting ssl_ciphers", "error") in _with(
        ssl_ciphers=weak, ssl_min_protocol_version="TLSv1.2"
    )
    assert _with(ssl_min_protocol_version="TLSv1") == [
        ("setting ssl_min_protocol_version", "error")
    ]
    assert _with(ssl_min_protocol_version="TLSv1.2", ssl_max_protocol_version="TLSv1.2") == [
        ("setting ssl_max_protocol_version", "warning")
    ]
    assert _with(ssl_prefer_server_ciphers="off") == [
        ("setting ssl_prefer_server_ciphers", "warning")
    ]
    assert _with(ssl_ecdh_curve="secp224r1") == [("setting ssl_ecdh_curve", "error")]
    # Hidden from a login without pg_read_all_settings: skipped, naming the privilege.
    hidden = {k: v for k, v in CLEAN_SETTINGS.items() if k not in {"ssl_ciphers", "ssl_ecdh_curve"}}
    with pytest.raises(Skip, match="pg_read_all_settings to read ssl_ciphers, ssl_ecdh_curve"):
        _settings_findings(hidden)


# -- against the real server ---------------------------------------------------------------


def test_fresh_sandbox_passes_probe_verify_and_audit(box: Sandbox) -> None:
    assert _show(box, ["ssl_min_protocol_version", "ssl_ciphers"]) == {
        "ssl_min_protocol_version": "TLSv1.3",
        "ssl_ciphers": SAFE_CIPHERS,
    }
    started = time.perf_counter()
    tls = verify_server(_auditor(box))
    assert time.perf_counter() - started < 3.0
    for check_id in ("ssl-protocol-versions", "ssl-cipher-suites"):
        assert result(tls.report, check_id).status == "passed"
    probe = tls.details["probe"]
    outcomes = {v: d["outcome"] for v, d in probe["versions"].items()}
    assert outcomes == {
        "TLSv1": "refused",
        "TLSv1.1": "refused",
        "TLSv1.2": "refused",
        "TLSv1.3": "accepted",
    }
    assert probe["versions"]["TLSv1.2"]["suites_tried"] == []  # refused: not enumerated
    assert probe["groups"]["version"] == "TLSv1.3"
    assert probe["groups"]["accepted"] == ["prime256v1"]  # PostgreSQL's ssl_ecdh_curve default
    assert "X25519" in probe["groups"]["refused"]
    assert probe["connections"] <= 15

    report = _audit(box)
    assert [r.status for r in report.results] == ["passed", "passed"]
    infos = " ".join(f.detail for f in result(report, "tls-cipher-suites").findings)
    assert "TLSv1.3 accepted" in infos and "prime256v1" in infos
    assert report.duration_s < 1.0


def test_tls12_with_postgres_default_ciphers_fails_both(box: Sandbox, configure: Configure) -> None:
    with box.admin_connect() as conn:
        row = conn.execute(
            "SELECT boot_val FROM pg_catalog.pg_settings WHERE name = 'ssl_ciphers'"
        ).fetchone()
    assert row is not None
    default_ciphers = str(row[0])  # PostgreSQL's own default: HIGH:MEDIUM:+3DES:!aNULL
    configure(ssl_min_protocol_version="TLSv1.2", ssl_ciphers=default_ciphers)
    cbc = _cbc_suite(box)

    started = time.perf_counter()
    text = _verify_cli(box)
    assert time.perf_counter() - started < 5.0
    assert text.exit_code == 1, text.output
    assert cbc in text.output and "ssl-cipher-suites" in text.output
    assert "suites_tried:" in text.output  # the report states what was tried

    doc = json.loads(_verify_cli(box, "--format", "json").output)
    results = {r["id"]: r for r in doc["results"]}
    assert results["ssl-cipher-suites"]["status"] == "failed"
    assert results["ssl-protocol-versions"]["status"] == "passed"  # TLSv1.2 itself is fine
    errors = {
        f["object"].split()[-1]
        for f in results["ssl-cipher-suites"]["findings"]
        if f["level"] == "error"
    }
    assert cbc in errors
    tls12 = doc["tls"]["probe"]["versions"]["TLSv1.2"]
    assert cbc in tls12["suites_accepted"] and cbc in tls12["suites_tried"]
    strong = f"ECDHE-{_auth(box)}-AES128-GCM-SHA256"
    assert strong in tls12["suites_accepted"] and strong not in errors  # accepted, and fine

    report = _audit(box)
    assert report.exit_code("error") == 1
    suites = _problems(report, "tls-cipher-suites")
    assert any(f.object.endswith(f"TLSv1.2 {cbc}") and f.level == "error" for f in suites)
    settings = _problems(report, "tls-cipher-settings")
    # Errors for CBC, CCM_8 and the like; ARIA-GCM (AEAD with forward secrecy) is a warning.
    assert [(f.object, f.level) for f in settings] == [
        ("setting ssl_ciphers", "error"),
        ("setting ssl_ciphers", "warning"),
    ]
    assert cbc in settings[0].detail and SAFE_CIPHERS in settings[0].remediation


def test_tls12_with_aead_ecdhe_ciphers_passes_the_suite_checks(
    box: Sandbox, configure: Configure
) -> None:
    configure(ssl_min_protocol_version="TLSv1.2", ssl_ciphers=SAFE_CIPHERS)
    tls = verify_server(_auditor(box))
    assert result(tls.report, "ssl-cipher-suites").status == "passed"
    accepted = set(tls.details["probe"]["versions"]["TLSv1.2"]["suites_accepted"])
    auth = _auth(box)
    assert accepted == {
        f"ECDHE-{auth}-AES256-GCM-SHA384",
        f"ECDHE-{auth}-AES128-GCM-SHA256",
        f"ECDHE-{auth}-CHACHA20-POLY1305",
    }
    assert tls.details["probe"]["server_cipher_order"] is True
    report = _audit(box)
    assert [r.status for r in report.results] == ["passed", "passed"]


def test_tls11_allowed_is_an_error(box: Sandbox, configure: Configure) -> None:
    if client_context(ssl.TLSVersion.TLSv1_1) is None:
        pytest.skip(
            f"the local OpenSSL ({ssl.OPENSSL_VERSION}) cannot offer TLSv1.1 even at @SECLEVEL=0"
        )
    # OpenSSL 3 refuses TLS 1.0/1.1 at security level 1 and up, on the server side too.
    configure(
        ssl_min_protocol_version="TLSv1.1", ssl_ciphers="HIGH:MEDIUM:+3DES:!aNULL:@SECLEVEL=0"
    )
    tls = verify_server(_auditor(box))
    tls11 = tls.details["probe"]["versions"]["TLSv1.1"]
    if tls11["outcome"] == "untestable":
        pytest.skip(f"the local OpenSSL could not offer TLSv1.1: {tls11['detail']}")
    assert tls11["outcome"] == "accepted", tls11
    versions = result(tls.report, "ssl-protocol-versions")
    assert [(f.object.split()[-1], f.level) for f in versions.findings if f.level != "info"] == [
        ("TLSv1.1", "error")
    ]
    assert tls.report.exit_code("error") == 1

    report = _audit(box)
    suites = _problems(report, "tls-cipher-suites")
    assert any(f.object.endswith(" TLSv1.1") and "accepts TLSv1.1" in f.detail for f in suites)
    settings = _problems(report, "tls-cipher-settings")
    assert any(
        f.object == "setting ssl_min_protocol_version"
        and f.level == "error"
        and "TLSv1.1" in f.detail
        for f in settings
    )


def test_client_cipher_order_is_a_warning_and_seen_from_outside(
    box: Sandbox, configure: Configure
) -> None:
    configure(
        ssl_min_protocol_version="TLSv1.2",
        ssl_ciphers=SAFE_CIPHERS,
        ssl_prefer_server_ciphers="off",
    )
    report = _audit(box)
    settings = _problems(report, "tls-cipher-settings")
    assert [(f.object, f.level) for f in settings] == [
        ("setting ssl_prefer_server_ciphers", "warning")
    ]
    probe = probe_server(_auditor(box).host or "", box.port)
    assert probe.server_order is False and "client's order" in probe.order_detail


# -- fail closed ----------------------------------------------------------------------------


@contextmanager
def _fake_server(answer: bytes | None) -> Iterator[int]:
    """A TCP peer that answers each SSLRequest with `answer` (None: nothing), then says nothing."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.recv(8)
            if answer is not None:
                conn.sendall(answer)
            while conn.recv(4096):  # never a TLS answer, until the client gives up
                pass

    def serve() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:  # closed: the test is over
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield srv.getsockname()[1]
    finally:
        srv.shutdown(socket.SHUT_RDWR)
        srv.close()
        thread.join(timeout=5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"N", "refuses TLS"),
        (None, "did not answer the SSLRequest"),
        (b"S", "a TLS handshake timed out"),
    ],
)
def test_probe_that_cannot_finish_raises(answer: bytes | None, message: str) -> None:
    with _fake_server(answer) as port, pytest.raises(ProbeError, match=message):
        probe_server("127.0.0.1", port, timeout=0.3)
    with pytest.raises(ProbeError, match="cannot reach"):
        probe_server("127.0.0.1", _closed_port(), timeout=0.3)


def test_audit_check_skips_naming_why(box: Sandbox) -> None:
    url = _auditor(box)
    cases = [
        (replace(url, port=_closed_port()), True, "cannot reach"),
        (replace(url, host=str(box.run_dir)), True, "Unix socket"),
        (url, False, "--no-probe"),
    ]
    with connect(url, autocommit=True) as conn:
        for target, enabled, reason in cases:
            ctx = AuditContext(conn, target, load_policies(None), ProbeConfig(enabled))
            outcome = run_check(ctx, tls_cipher_suites.CHECK)
            assert outcome.status == "skipped" and reason in (outcome.skip_reason or ""), outcome


def test_probe_refuses_a_server_that_does_not_prove_its_identity(
    box: Sandbox, tmp_path: Path
) -> None:
    other = tmp_path / "other-ca.crt"
    other.write_bytes(make_ca("someone else").cert)
    with pytest.raises(ProbeError, match="did not prove its identity"):
        probe_server("127.0.0.1", box.port, rootcert=other)
    assert probe_server("127.0.0.1", box.port, rootcert=box.ca_cert_path).connections > 1


def test_cli_unreachable_and_non_tls_are_one_line_exit_2() -> None:
    with _fake_server(b"N") as port:
        cases = [(_closed_port(), "cannot reach"), (port, "refuses TLS")]
        for target, needle in cases:
            out = CliRunner().invoke(
                cli,
                ["ssl", "verify", "--database-url", f"postgresql://u@127.0.0.1:{target}/x"],
                env={},
            )
            lines = [ln for ln in out.output.splitlines() if ln.strip()]
            assert out.exit_code == 2 and len(lines) == 1, out.output
            assert lines[0].startswith("chatsec: error:") and needle in lines[0]
