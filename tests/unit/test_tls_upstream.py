"""UpstreamTls: client contexts, identity for the pool, and the subjectAltName check."""

from __future__ import annotations

import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.backends.base import Endpoint
from gateway.tls.upstream import UpstreamTls, UpstreamTlsError, hostname_matches, peer_names
from tests.fixtures.certs import Leaf, authority


class PeerStub:
    """What ``check`` reads from an SSLObject: the peer certificate in DER."""

    def __init__(self, leaf: Leaf) -> None:
        self.der = x509.load_pem_x509_certificate(leaf.cert_pem).public_bytes(Encoding.DER)

    def getpeercert(self, binary_form: bool = False) -> bytes:
        assert binary_form
        return self.der


@pytest.mark.parametrize(
    ("wanted", "presented", "matches"),
    [
        ("api.test", "api.test", True),
        ("API.test", "api.TEST.", True),
        ("api.test", "*.test", False),  # a wildcard needs a parent with a dot: no "*.test" TLD
        ("a.api.test", "*.api.test", True),
        ("api.test", "*.api.test", False),  # the wildcard is one label, never none
        ("a.b.api.test", "*.api.test", False),  # ... nor two
        ("*.api.test", "*.api.test", True),
        ("*.api.test", "a.api.test", True),  # a policy wildcard accepts the names it covers
        ("*.api.test", "a.b.api.test", False),
        ("*.api.test", "api.test", False),
        ("a.api.test", "b.api.test", False),
    ],
)
def test_hostname_matching_follows_rfc_6125(wanted: str, presented: str, matches: bool) -> None:
    assert hostname_matches(wanted, presented) is matches


def test_build_makes_a_verifying_tls12_client_context() -> None:
    tls = UpstreamTls.build("api.test", ca_pem=authority().pem)
    context = tls.context
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_2
    assert not context.hostname_checks_common_name
    assert tls.alpn == ("http/1.1",) and tls.protocol == "http/1.1"
    assert context.cert_store_stats()["x509_ca"] == 1
    with_sans = UpstreamTls.build(
        "api.test", ca_pem=authority().pem, subject_alt_names=[("URI", "spiffe://td/x")]
    )
    assert not with_sans.context.check_hostname  # checked by UpstreamTls.check instead
    assert with_sans.context.verify_mode is ssl.CERT_REQUIRED  # the chain still is


def test_system_settings_for_backend_kinds() -> None:
    tls = UpstreamTls.system("api.openai.com", http2=True)
    assert (tls.server_name, tls.trust, tls.alpn, tls.protocol) == (
        "api.openai.com",
        "System",
        ("h2",),
        "h2",
    )
    assert tls.context.cert_store_stats()["x509_ca"] > 0
    endpoint = Endpoint("203.0.113.7", 443, tls.protocol, tls)
    assert endpoint.tls is tls


def test_identity_is_the_settings_not_the_context() -> None:
    a = UpstreamTls.build("api.test", ca_pem=authority().pem, source="BackendTLSPolicy a/p")
    b = UpstreamTls.build("api.test", ca_pem=authority().pem, source="BackendTLSPolicy a/q")
    assert a.context is not b.context
    assert a == b and hash(a) == hash(b)
    assert Endpoint("10.0.0.1", 443, tls=a) == Endpoint("10.0.0.1", 443, tls=b)
    assert a != UpstreamTls.build("other.test", ca_pem=authority().pem)
    assert a != UpstreamTls.system("api.test")
    assert a != UpstreamTls.build("api.test", ca_pem=authority().pem, http2=True)
    assert Endpoint("10.0.0.1", 443) != Endpoint("10.0.0.1", 443, tls=a)


def test_check_accepts_a_matching_uri_or_dns_name() -> None:
    leaf = authority().issue("a.api.test", uris=("spiffe://td/ns/default/sa/api",))
    peer = PeerStub(leaf)
    assert peer_names(peer.der) == (("a.api.test",), ("spiffe://td/ns/default/sa/api",))
    for sans in (
        [("URI", "spiffe://td/ns/default/sa/api")],
        [("Hostname", "a.api.test")],
        [("Hostname", "*.api.test")],
        [("URI", "spiffe://td/ns/other"), ("Hostname", "a.api.test")],
    ):
        UpstreamTls.build("x.test", ca_pem=authority().pem, subject_alt_names=sans).check(peer)  # type: ignore[arg-type]


def test_check_refuses_a_certificate_without_the_names() -> None:
    peer = PeerStub(authority().issue("a.api.test", uris=("spiffe://td/ns/default/sa/api",)))
    tls = UpstreamTls.build(
        "a.api.test",
        ca_pem=authority().pem,
        subject_alt_names=[("URI", "spiffe://td/ns/default/sa/other"), ("Hostname", "b.api.test")],
    )
    with pytest.raises(UpstreamTlsError) as caught:
        tls.check(peer)  # type: ignore[arg-type]
    error = caught.value
    assert isinstance(error, ssl.SSLCertVerificationError)  # classified as tls_verify
    assert str(error) == (
        "certificate verify failed: no subjectAltName matches URI spiffe://td/ns/default/sa/other, "
        "Hostname b.api.test (the certificate has DNS:a.api.test, "
        "URI:spiffe://td/ns/default/sa/api)"
    )
    # The URI check is exact: a prefix or another case is another identity.
    for uri in ("spiffe://td/ns/default/sa/ap", "SPIFFE://td/ns/default/sa/API"):
        with pytest.raises(UpstreamTlsError):
            UpstreamTls.build("x", ca_pem=authority().pem, subject_alt_names=[("URI", uri)]).check(
                peer
            )  # type: ignore[arg-type]


def test_check_is_a_no_op_without_subject_alt_names() -> None:
    tls = UpstreamTls.build("api.test", ca_pem=authority().pem)
    tls.check(PeerStub(authority().issue("other.test")))  # type: ignore[arg-type]
