"""Conformance: precedence across routes (research note §1.2, §2.2-§2.3).

Hostname specificity first, then the match criteria, then the oldest creationTimestamp, then
``namespace/name``, then rule order. No conformance test covers these; the spec text does.
"""

from __future__ import annotations

import pytest

from tests.fixtures.conformance import backend_of, deploy, gateway_doc, route_doc


def _rule(backend: str, path: str = "/", kind: str = "PathPrefix") -> str:
    return f"""
- matches: [{{path: {{type: {kind}, value: {path}}}}}]
  backendRefs: [{{name: {backend}, port: 80}}]
"""


@pytest.mark.parametrize(
    ("host", "expected"),
    [("foo.example.com", "v1"), ("bar.example.com", "v2"), ("foo.example.com:8080", "v1")],
)
async def test_hostname_specificity_beats_path(
    echo_factory, gateway_factory, free_port: int, host: str, expected: str
) -> None:
    routes = route_doc("a-precise", _rule("v1"), ["foo.example.com"]) + route_doc(
        "b-wildcard", _rule("v2", "/login", "Exact"), ["*.example.com"]
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        response = await dep.client.get("/login", headers={"Host": host})
    assert backend_of(response) == expected


async def test_oldest_creation_timestamp_wins(
    echo_factory, gateway_factory, free_port: int
) -> None:
    routes = route_doc("a-newer", _rule("v1"), created="2025-02-01T00:00:00Z") + route_doc(
        "b-older", _rule("v2"), created="2025-01-01T00:00:00Z"
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        assert backend_of(await dep.client.get("/")) == "v2"


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (("default", "b"), ("default", "a"), "v2"),
        (("default", "a"), ("alpha", "z"), "v2"),
        (("alpha", "z"), ("default", "a"), "v1"),
    ],
)
async def test_namespace_name_breaks_ties(
    echo_factory, gateway_factory, free_port: int, first, second, expected: str
) -> None:
    routes = route_doc(first[1], _rule("v1"), namespace=first[0]) + route_doc(
        second[1], _rule("v2"), namespace=second[0]
    )
    # Each route's Service lives in the route's namespace: no ReferenceGrant involved.
    placed = {first[0]: ["v1"]} | ({second[0]: ["v2"]} if second[0] != first[0] else {})
    if second[0] == first[0]:
        placed[first[0]] = ["v1", "v2"]
    async with deploy(
        echo_factory, gateway_factory, free_port, routes, backends=(), namespaces=placed
    ) as dep:
        assert backend_of(await dep.client.get("/x")) == expected


async def test_first_rule_wins_within_a_route(
    echo_factory, gateway_factory, free_port: int
) -> None:
    routes = route_doc("one", _rule("v3", "/p") + _rule("v1", "/p") + _rule("v2", "/p"))
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        assert backend_of(await dep.client.get("/p")) == "v3"


async def test_exact_beats_longer_prefix_across_routes(
    echo_factory, gateway_factory, free_port: int
) -> None:
    routes = route_doc("a", _rule("v1", "/a/b/c")) + route_doc("b", _rule("v2", "/a/b", "Exact"))
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        assert backend_of(await dep.client.get("/a/b")) == "v2"
        assert backend_of(await dep.client.get("/a/b/c/d")) == "v1"
        assert (await dep.client.get("/a/bc")).status_code == 404


@pytest.mark.parametrize(
    ("listener", "route_a", "route_b", "host", "expected"),
    [
        # The longer wildcard wins over an Exact path on a shorter one.
        (None, ["*.example.com"], ["*.foo.example.com"], "a.foo.example.com", "v2"),
        (None, ["*.example.com"], ["*.foo.example.com"], "a.bar.example.com", "v1"),
        # A precise hostname beats the listener's wildcard a hostname-less route inherits.
        ("*.example.com", [], ["foo.example.com"], "foo.example.com", "v2"),
        ("*.example.com", [], ["foo.example.com"], "bar.example.com", "v1"),
        # Route *.specific.com on listener very.specific.com serves very.specific.com: equal
        # effective hostnames, so the Exact path decides.
        ("very.specific.com", ["*.specific.com"], ["very.specific.com"], "very.specific.com", "v1"),
    ],
)
async def test_effective_hostname_specificity(
    echo_factory, gateway_factory, free_port: int, listener, route_a, route_b, host, expected
) -> None:
    routes = route_doc("a", _rule("v1", "/login", "Exact"), route_a) + route_doc(
        "b", _rule("v2"), route_b
    )
    gateway = gateway_doc(free_port, listener)
    async with deploy(echo_factory, gateway_factory, free_port, routes, gateway=gateway) as dep:
        response = await dep.client.get("/login", headers={"Host": host})
    assert backend_of(response) == expected


async def test_prefix_outranks_regular_expression(
    echo_factory, gateway_factory, free_port: int
) -> None:
    """Regex precedence is implementation-specific; ours ranks it after Exact and PathPrefix."""
    routes = route_doc("re", _rule("v1", "/a/.*", "RegularExpression")) + route_doc(
        "prefix", _rule("v2", "/a")
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        assert backend_of(await dep.client.get("/a/b")) == "v2"
