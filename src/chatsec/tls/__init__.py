"""A private CA and server certificates for TLS to the local sandbox."""

from chatsec.tls.certs import DEFAULT_HOSTS, PemPair, make_ca, make_server_cert

__all__ = ["DEFAULT_HOSTS", "PemPair", "make_ca", "make_server_cert"]
