"""HTTPS listeners: Secrets, certificate validation, SNI selection, ALPN, status and dump."""

from __future__ import annotations

import json
import ssl
import textwrap
from datetime import timedelta

import pytest

from gateway.compile import format_status
from gateway.config import ConfigError, load_text
from gateway.snapshot import Snapshot
from tests.fixtures.certs import Leaf, authority, handshake, secret_yaml
from tests.fixtures.route_config import compile_yaml, head, route_yaml, served_by


def gateway_yaml(*listeners: str, namespace: str = "default") -> str:
    """A Gateway ``gw`` with the given listener lines (flow mappings)."""
    lines = "\n".join(f"  - {item}" for item in listeners)
    return (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n"
        f"metadata: {{name: gw, namespace: {namespace}}}\n"
        "spec:\n  gatewayClassName: ambient\n  listeners:\n" + lines + "\n"
    )


def https(name: str, secret: str, hostname: str | None = None, port: int = 443) -> str:
    """An HTTPS listener line referencing one Secret (``ns/name`` or ``name``)."""
    namespace, _, secret_name = secret.rpartition("/")
    ref = f"{{name: {secret_name}" + (f", namespace: {namespace}}}" if namespace else "}")
    host = f", hostname: '{hostname}'" if hostname else ""
    return (
        f"{{name: {name}, port: {port}, protocol: HTTPS{host}, "
        f"tls: {{certificateRefs: [{ref}]}}, allowedRoutes: {{namespaces: {{from: All}}}}}}"
    )


HTTP_80 = "{name: web, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}"


def listener_conditions(snapshot: Snapshot, listener: str) -> dict[str, tuple[str, str, str]]:
    """type -> (status, reason, message) of a listener of Gateway gw."""
    gateway = next(s for s in snapshot.statuses if s.kind == "Gateway")
    parent = next(p for p in gateway.parents if p.parent.startswith(f"listener {listener} "))
    return {c.type: (c.status, c.reason, c.message) for c in parent.conditions}


def presented(snapshot: Snapshot, sni: str | None, leaves: dict[str, Leaf], port: int = 443) -> str:
    """Which leaf (by label) a client with ``sni`` is shown on ``port``."""
    result = handshake(snapshot.tls[port], sni)
    by_fingerprint = {leaf.fingerprint: label for label, leaf in leaves.items()}
    return by_fingerprint[result.fingerprint]


@pytest.fixture(scope="module")
def leaves() -> dict[str, Leaf]:
    ca = authority()
    return {
        "foo": ca.issue("foo.example.com"),
        "wild": ca.issue("*.example.com"),
        "deep": ca.issue("*.deep.example.com"),
        "any": ca.issue("fallback.test"),
    }


def test_https_listener_is_programmed_with_its_certificate(leaves: dict[str, Leaf]) -> None:
    snapshot = compile_yaml(
        gateway_yaml(https("secure", "foo", "foo.example.com")),
        secret_yaml("foo", leaves["foo"]),
        route_yaml("r", "- backendRefs: [{name: v1, port: 8080}]"),
        with_gateway=False,
    )
    assert listener_conditions(snapshot, "secure")["Programmed"][:2] == ("True", "Programmed")
    assert set(snapshot.tls) == {443}
    assert snapshot.port_protocols == {443: "HTTPS"}
    assert snapshot.scheme_of(443) == "https" and snapshot.scheme_of(80) == "http"
    assert [(i.name, i.scheme) for i in snapshot.listeners] == [("secure", "https")]
    request = head("/", host="foo.example.com", port=443, scheme="https")
    assert served_by(snapshot, request, port=443) == "v1"
    assert presented(snapshot, "foo.example.com", leaves) == "foo"


def test_sni_selects_exact_then_most_specific_wildcard_then_catch_all(
    leaves: dict[str, Leaf],
) -> None:
    snapshot = compile_yaml(
        gateway_yaml(
            https("wild", "wild", "*.example.com"),
            https("foo", "foo", "foo.example.com"),
            https("deep", "deep", "*.deep.example.com"),
            https("any", "any"),
        ),
        *(secret_yaml(name, leaf) for name, leaf in leaves.items()),
        with_gateway=False,
    )
    assert presented(snapshot, "foo.example.com", leaves) == "foo"
    assert presented(snapshot, "FOO.example.com", leaves) == "foo"
    assert presented(snapshot, "bar.example.com", leaves) == "wild"
    assert presented(snapshot, "a.deep.example.com", leaves) == "deep"
    assert presented(snapshot, "example.com", leaves) == "any"  # "*." needs a label
    assert presented(snapshot, "other.org", leaves) == "any"
    assert presented(snapshot, None, leaves) == "any"


def test_without_a_catch_all_an_unknown_or_absent_name_gets_the_first_listener(
    leaves: dict[str, Leaf],
) -> None:
    snapshot = compile_yaml(
        gateway_yaml(
            https("wild", "wild", "*.example.com"), https("foo", "foo", "foo.example.com")
        ),
        secret_yaml("wild", leaves["wild"]),
        secret_yaml("foo", leaves["foo"]),
        with_gateway=False,
    )
    assert presented(snapshot, None, leaves) == "wild"
    assert presented(snapshot, "other.org", leaves) == "wild"
    assert presented(snapshot, "foo.example.com", leaves) == "foo"


def test_alpn_offers_h2_and_http11_and_records_the_server_name(leaves: dict[str, Leaf]) -> None:
    snapshot = compile_yaml(
        gateway_yaml(https("foo", "foo", "foo.example.com")),
        secret_yaml("foo", leaves["foo"]),
        with_gateway=False,
    )
    context = snapshot.tls[443]
    both = handshake(context, "Foo.Example.com")
    assert both.alpn == "h2"
    assert both.server_name == "foo.example.com"
    assert handshake(context, "foo.example.com", alpn=("http/1.1",)).alpn == "http/1.1"
    assert handshake(context, None).server_name is None


def test_tls_1_2_clients_get_an_http2_grade_cipher_and_1_2_is_the_minimum(
    leaves: dict[str, Leaf],
) -> None:
    snapshot = compile_yaml(
        gateway_yaml(https("foo", "foo")), secret_yaml("foo", leaves["foo"]), with_gateway=False
    )
    context = snapshot.tls[443]
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    tls12 = handshake(context, "foo.example.com", maximum_version=ssl.TLSVersion.TLSv1_2)
    assert tls12.version == "TLSv1.2" and tls12.alpn == "h2"
    assert tls12.cipher is not None and tls12.cipher.startswith("ECDHE-")
    assert "GCM" in tls12.cipher or "CHACHA20" in tls12.cipher
    assert handshake(context, "foo.example.com").version == "TLSv1.3"


def test_string_data_secret_is_accepted(leaves: dict[str, Leaf]) -> None:
    snapshot = compile_yaml(
        gateway_yaml(https("foo", "foo")),
        secret_yaml("foo", leaves["foo"], string_data=True),
        with_gateway=False,
    )
    assert listener_conditions(snapshot, "foo")["Programmed"][0] == "True"
    assert presented(snapshot, "x.test", leaves) == "foo"


def _bad_secrets() -> list[tuple[str, str]]:
    ca = authority()
    good, other = ca.issue("bad.example.com"), ca.issue("other.example.com")
    expired = ca.issue("bad.example.com", not_before=timedelta(days=-10), not_after=timedelta(-1))
    future = ca.issue("bad.example.com", not_before=timedelta(days=2), not_after=timedelta(9))
    garbage = Leaf(b"-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", b"x", b"")
    return [
        (secret_yaml("bad", Leaf(good.cert_pem, other.key_pem, b"")), "does not match"),
        (secret_yaml("bad", expired), "expired on"),
        (secret_yaml("bad", future), "not valid before"),
        (secret_yaml("bad", garbage), "tls.crt is not a PEM certificate"),
        (secret_yaml("bad", Leaf(good.cert_pem, b"not a key", b"")), "tls.key is not"),
        (secret_yaml("bad", good, type_="Opaque"), "has type 'Opaque'"),
        ("", "Secret default/bad not found"),
    ]


@pytest.mark.parametrize(("secret", "problem"), _bad_secrets())
def test_invalid_or_missing_secret_leaves_the_listener_unprogrammed(
    secret: str, problem: str, leaves: dict[str, Leaf]
) -> None:
    documents = [
        gateway_yaml(HTTP_80, https("good", "foo", "foo.example.com"), https("bad", "bad")),
        secret_yaml("foo", leaves["foo"]),
        route_yaml("r", "- backendRefs: [{name: v1, port: 8080}]"),
    ]
    snapshot = compile_yaml(*documents, *([secret] if secret else []), with_gateway=False)
    conditions = listener_conditions(snapshot, "bad")
    assert conditions["Accepted"][:2] == ("True", "Accepted")
    assert conditions["Programmed"][:2] == ("False", "Invalid")
    status, reason, message = conditions["ResolvedRefs"]
    assert (status, reason) == ("False", "InvalidCertificateRef")
    assert "tls.certificateRefs[0]" in message and "default/bad" in message
    assert problem in message
    # The other listeners keep working; the bad one is not served.
    assert [i.name for i in snapshot.listeners] == ["web", "good"]
    assert presented(snapshot, "unknown.test", leaves) == "foo"
    assert served_by(snapshot, head("/", host="x.test")) == "v1"
    assert served_by(snapshot, head("/", host="foo.example.com", port=443), port=443) == "v1"
    assert "InvalidCertificateRef" in format_status(snapshot.statuses)


def test_port_with_only_invalid_listeners_has_no_tls_context() -> None:
    snapshot = compile_yaml(gateway_yaml(https("bad", "missing")), with_gateway=False)
    assert snapshot.tls == {} and snapshot.listeners == ()
    assert 443 not in snapshot.routers


def test_https_listener_without_tls_or_with_passthrough_is_not_programmed() -> None:
    snapshot = compile_yaml(
        gateway_yaml(
            "{name: bare, port: 443, protocol: HTTPS}",
            "{name: pass, port: 8443, protocol: HTTPS, tls: {mode: Passthrough}}",
        ),
        with_gateway=False,
    )
    bare = listener_conditions(snapshot, "bare")
    assert bare["ResolvedRefs"][:2] == ("False", "InvalidCertificateRef")
    assert "tls.certificateRefs" in bare["ResolvedRefs"][2]
    passthrough = listener_conditions(snapshot, "pass")
    assert passthrough["Accepted"][:2] == ("False", "UnsupportedValue")
    assert passthrough["Programmed"][:2] == ("False", "Invalid")
    assert snapshot.tls == {}


CROSS_NAMESPACE_GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: allow-gateways, namespace: certs}
spec:
  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]
  to: [{group: "", kind: Secret, name: foo}]
"""


def test_cross_namespace_secret_needs_a_reference_grant(leaves: dict[str, Leaf]) -> None:
    documents = [
        gateway_yaml(https("secure", "certs/foo")),
        secret_yaml("foo", leaves["foo"], namespace="certs"),
    ]
    denied = compile_yaml(*documents, with_gateway=False)
    status, reason, message = listener_conditions(denied, "secure")["ResolvedRefs"]
    assert (status, reason) == ("False", "RefNotPermitted")
    assert "Secret certs/foo" in message and "ReferenceGrant" in message
    assert listener_conditions(denied, "secure")["Programmed"][0] == "False"
    assert denied.tls == {}

    granted = compile_yaml(*documents, CROSS_NAMESPACE_GRANT, with_gateway=False)
    assert listener_conditions(granted, "secure")["Programmed"][:2] == ("True", "Programmed")
    assert presented(granted, "foo.example.com", leaves) == "foo"

    near_miss = CROSS_NAMESPACE_GRANT.replace("kind: Gateway", "kind: HTTPRoute")
    refused = compile_yaml(*documents, near_miss, with_gateway=False)
    assert listener_conditions(refused, "secure")["ResolvedRefs"][1] == "RefNotPermitted"


def test_changed_certificate_gives_a_new_context_after_recompile() -> None:
    ca = authority()
    before, after = ca.issue("foo.example.com"), ca.issue("foo.example.com")
    first = compile_yaml(
        gateway_yaml(https("s", "foo")), secret_yaml("foo", before), with_gateway=False
    )
    second = compile_yaml(
        gateway_yaml(https("s", "foo")), secret_yaml("foo", after), with_gateway=False
    )
    assert first.tls[443] is not second.tls[443]
    assert handshake(first.tls[443], "foo.example.com").fingerprint == before.fingerprint
    assert handshake(second.tls[443], "foo.example.com").fingerprint == after.fingerprint


def test_http_and_https_on_one_port_conflict(leaves: dict[str, Leaf]) -> None:
    snapshot = compile_yaml(
        gateway_yaml(
            "{name: web, port: 8443, protocol: HTTP}",
            https("secure", "foo", "foo.example.com", port=8443),
        ),
        secret_yaml("foo", leaves["foo"]),
        with_gateway=False,
    )
    conflicted = listener_conditions(snapshot, "secure")
    assert conflicted["Conflicted"][:2] == ("True", "ProtocolConflict")
    assert conflicted["Programmed"][:2] == ("False", "Invalid")
    assert "port 8443 already serves HTTP" in conflicted["Conflicted"][2]
    assert snapshot.port_protocols == {8443: "HTTP"} and snapshot.tls == {}


def test_dump_shows_certificates_but_never_the_key(leaves: dict[str, Leaf]) -> None:
    snapshot = compile_yaml(
        gateway_yaml(https("secure", "foo", "foo.example.com")),
        secret_yaml("foo", leaves["foo"]),
        with_gateway=False,
    )
    listener = next(v for v in snapshot.dump["listeners"] if v["name"] == "secure")
    certificate = listener["tls"]["certificates"][0]
    assert certificate["secret"] == "default/foo"
    assert certificate["subject"] == "CN=foo.example.com"
    assert certificate["dnsNames"] == ["foo.example.com"]
    assert certificate["notAfter"] > certificate["notBefore"]
    text = json.dumps(snapshot.dump)
    key_body = leaves["foo"].key_pem.decode().splitlines()[1]
    assert "PRIVATE KEY" not in text and key_body not in text


def _load_error(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load_text(textwrap.dedent(text), "tls.yaml")
    return str(caught.value)


def test_tls_on_an_http_listener_is_a_config_error() -> None:
    message = _load_error(gateway_yaml("{name: web, port: 80, protocol: HTTP, tls: {}}"))
    assert message.startswith("tls.yaml: Gateway default/gw: spec.listeners[0]: ")
    assert "tls: must not be set for protocol HTTP" in message


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("data: {tls.crt: '!!!', tls.key: eA==}", "Secret default/s: data: 'tls.crt': not valid"),
        ("data: {tls.crt: eA==}", "Secret default/s: (object)"),
    ],
)
def test_malformed_tls_secret_is_a_config_error(body: str, expected: str) -> None:
    message = _load_error(
        f"apiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\ntype: kubernetes.io/tls\n{body}\n"
    )
    assert message.startswith(f"tls.yaml: {expected}")
    if "(object)" in expected:
        assert "'tls.key'" in message


def test_redirects_on_an_https_listener_derive_scheme_and_port_from_it(
    leaves: dict[str, Leaf],
) -> None:
    snapshot = compile_yaml(
        gateway_yaml(https("secure", "foo", "foo.example.com", port=8443)),
        secret_yaml("foo", leaves["foo"]),
        route_yaml(
            "r",
            """
            - matches: [{path: {value: /same}}]
              filters: [{type: RequestRedirect, requestRedirect: {hostname: new.example.com}}]
            - matches: [{path: {value: /plain}}]
              filters: [{type: RequestRedirect, requestRedirect: {scheme: http}}]
            """,
        ),
        with_gateway=False,
    )

    def location(path: str) -> str:
        request = head(path, host="foo.example.com", port=8443, scheme=snapshot.scheme_of(8443))
        rule = snapshot.routers[8443].match(request)
        assert rule is not None
        response = rule.request_filters[0].apply(request)
        assert response is not None
        return dict(response.headers)["location"]

    assert location("/same?q=1") == "https://new.example.com:8443/same?q=1"
    assert location("/plain") == "http://foo.example.com/plain"
