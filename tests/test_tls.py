"""chatsec.tls certificates, checked with cryptography and a real TLS handshake."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from chatsec.errors import ChatsecError
from chatsec.tls import PemPair, make_ca, make_server_cert


@pytest.fixture(scope="module")
def ca() -> PemPair:
    return make_ca()


def _cert(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def test_ca_is_p256_ca_that_signs_certificates(ca: PemPair) -> None:
    cert = _cert(ca.cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == (
        "chatsec sandbox CA"
    )
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    key = serialization.load_pem_private_key(ca.key, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert ca.key.startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS8, unencrypted


def test_default_server_cert_sans_and_issuer(ca: PemPair) -> None:
    server = make_server_cert(ca)
    cert = _cert(server.cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    cert.verify_directly_issued_by(_cert(ca.cert))
    assert server.key.startswith(b"-----BEGIN PRIVATE KEY-----")


def test_custom_hosts_become_dns_or_ip_sans(ca: PemPair) -> None:
    cert = _cert(make_server_cert(ca, hosts=["db.example.test", "10.1.2.3"]).cert)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["db.example.test"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("10.1.2.3")]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "db.example.test"


def test_validity_overrides(ca: PemPair) -> None:
    start = datetime(2020, 1, 1, tzinfo=UTC)
    end = datetime(2020, 2, 1, tzinfo=UTC)
    cert = _cert(make_server_cert(ca, not_before=start, not_after=end).cert)
    assert cert.not_valid_before_utc == start
    assert cert.not_valid_after_utc == end
    default = _cert(make_server_cert(ca, days=10).cert)
    lifetime = default.not_valid_after_utc - default.not_valid_before_utc
    assert timedelta(days=10) <= lifetime <= timedelta(days=10, minutes=10)
    with pytest.raises(ChatsecError):
        make_server_cert(ca, not_before=end, not_after=start)


def _handshake(tmp_path: Path, ca: PemPair, server: PemPair, server_hostname: str) -> None:
    """A TLS handshake over a socketpair; raises what the verifying client raises."""
    (tmp_path / "ca.crt").write_bytes(ca.cert)
    (tmp_path / "server.crt").write_bytes(server.cert)
    (tmp_path / "server.key").write_bytes(server.key)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    left, right = socket.socketpair()
    left.settimeout(10)
    right.settimeout(10)

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(right, server_side=True):
                pass
        except (ssl.SSLError, OSError):
            pass  # the client's rejection is what the test asserts on

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client_ctx.wrap_socket(left, server_hostname=server_hostname):
            pass
    finally:
        left.close()
        thread.join(10)
        right.close()


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "::1"])
def test_default_cert_verifies_for_each_default_host(
    tmp_path: Path, ca: PemPair, host: str
) -> None:
    _handshake(tmp_path, ca, make_server_cert(ca), host)


def test_cert_for_other_host_fails_hostname_check(tmp_path: Path, ca: PemPair) -> None:
    server = make_server_cert(ca, hosts=["db.example.test"])
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch|match"):
        _handshake(tmp_path, ca, server, "localhost")


def test_expired_cert_fails_verification(tmp_path: Path, ca: PemPair) -> None:
    now = datetime.now(UTC)
    server = make_server_cert(
        ca, not_before=now - timedelta(days=30), not_after=now - timedelta(days=1)
    )
    with pytest.raises(ssl.SSLCertVerificationError, match="expired"):
        _handshake(tmp_path, ca, server, "localhost")


def test_cert_from_another_ca_is_untrusted(tmp_path: Path, ca: PemPair) -> None:
    stranger = make_server_cert(make_ca("someone else"))
    with pytest.raises(ssl.SSLCertVerificationError, match="unable to get local issuer"):
        _handshake(tmp_path, ca, stranger, "localhost")
