"""The 421 decision on TLS ports: the SNI-chosen listener against the Host-chosen one."""

from __future__ import annotations

import pytest

from gateway.routing.misdirected import MISDIRECTED, MISDIRECTED_KIND
from gateway.snapshot import Snapshot
from tests.fixtures.certs import authority, secret_yaml
from tests.fixtures.route_config import compile_yaml, head, route_yaml


def https(name: str, hostname: str | None) -> str:
    host = f", hostname: '{hostname}'" if hostname else ""
    return (
        f"  - {{name: {name}, port: 443, protocol: HTTPS{host}, "
        "tls: {certificateRefs: [{name: cert}]}}\n"
    )


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    gateway = (
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\n"
        "spec:\n  gatewayClassName: ambient\n  listeners:\n"
        + https("foo", "foo.example.com")
        + https("wild", "*.example.com")
        + "  - {name: web, port: 80, protocol: HTTP, hostname: foo.example.com}\n"
        + "  - {name: web-wild, port: 80, protocol: HTTP, hostname: '*.example.com'}\n"
    )
    return compile_yaml(
        gateway,
        secret_yaml("cert", authority().issue("*.example.com", "foo.example.com")),
        route_yaml("to-foo", "- backendRefs: [{name: v1, port: 8080}]", parent="{name: gw}"),
        with_gateway=False,
    )


def kind(snapshot: Snapshot, host: str, sni: str | None, port: int = 443) -> str | None:
    request = head("/", host=host, port=port, scheme="https" if port == 443 else "http")
    request.sni = sni
    rule = snapshot.routers[port].match(request)
    return None if rule is None else rule.ref.kind


@pytest.mark.parametrize(
    ("sni", "host", "expected"),
    [
        ("foo.example.com", "foo.example.com", "HTTPRoute"),
        ("foo.example.com", "FOO.example.com:443", "HTTPRoute"),
        ("bar.example.com", "baz.example.com", "HTTPRoute"),  # same (wildcard) listener
        # The SNI listener does not cover the Host, another listener does: 421.
        ("foo.example.com", "bar.example.com", MISDIRECTED_KIND),
        # Another listener has a more specific match for the Host than the SNI's: 421.
        ("bar.example.com", "foo.example.com", MISDIRECTED_KIND),
        # No listener matches the Host: 404 (MUST), whatever the SNI.
        ("foo.example.com", "other.org", None),
        # No SNI: routed by Host as on a cleartext port.
        (None, "bar.example.com", "HTTPRoute"),
    ],
)
def test_misdirected_requests_get_421(
    snapshot: Snapshot, sni: str | None, host: str, expected: str | None
) -> None:
    assert kind(snapshot, host, sni) == expected


def test_cleartext_ports_never_answer_421(snapshot: Snapshot) -> None:
    assert kind(snapshot, "bar.example.com", None, port=80) == "HTTPRoute"
    assert kind(snapshot, "foo.example.com", None, port=80) == "HTTPRoute"


def test_the_misdirected_rule_answers_421_through_its_request_filter(snapshot: Snapshot) -> None:
    request = head("/x", host="bar.example.com", port=443, scheme="https")
    request.sni = "foo.example.com"
    rule = snapshot.routers[443].match(request)
    assert rule is MISDIRECTED and rule.choices == ()
    [answer_filter] = rule.request_filters
    response = answer_filter.apply(request)
    assert response is not None and response.status == 421
    assert b"bar.example.com" in response.body and b"foo.example.com" in response.body
