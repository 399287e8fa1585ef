"""Conformance: listener hostnames, route hostname intersection and listener isolation.

The Host header's port is ignored for matching and the header reaches the backend unmodified
(research note §1.2, §2.1, §3.4).
"""

from __future__ import annotations

import pytest

from tests.fixtures.conformance import backend_of, deploy, gateway_doc, route_doc


def _prefix_rule(prefix: str, backend: str) -> str:
    return f"""
- matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
  backendRefs: [{{name: {backend}, port: 80}}]
"""


INTERSECTION_ROUTES = (
    route_doc(
        "r1",
        _prefix_rule("/s1", "v1"),
        ["non.matching.com", "*.nonmatchingwildcard.io", "very.specific.com"],
    )
    + route_doc(
        "r2",
        _prefix_rule("/s2", "v2"),
        [
            "non.matching.com",
            "wildcard.io",
            "foo.wildcard.io",
            "bar.wildcard.io",
            "foo.bar.wildcard.io",
        ],
    )
    + route_doc("r3", _prefix_rule("/s3", "v3"), ["*.specific.com"])
    + route_doc("r4", _prefix_rule("/s4", "v1"), ["*.anotherwildcard.io"])
    + route_doc("r5", _prefix_rule("/s5", "v2"), ["specific.but.wrong.com", "wildcard.io"])
)


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("very.specific.com", "/s1", "v1"),
        ("very.specific.com:1234", "/s1", "v1"),
        ("Very.Specific.COM", "/s1", "v1"),  # host names compare case-insensitively
        ("non.matching.com", "/s1", 404),
        ("foo.nonmatchingwildcard.io", "/s1", 404),
        ("foo.wildcard.io", "/s1", 404),
        ("foo.wildcard.io", "/s2", "v2"),
        ("bar.wildcard.io", "/s2", "v2"),
        ("foo.bar.wildcard.io", "/s2", "v2"),
        ("wildcard.io", "/s2", 404),
        ("very.specific.com", "/s2", 404),
        ("very.specific.com", "/s3", "v3"),
        ("foo.specific.com", "/s3", 404),
        ("foo.anotherwildcard.io", "/s4", "v1"),
        ("bar.anotherwildcard.io", "/s4", "v1"),
        ("foo.bar.anotherwildcard.io:8080", "/s4", "v1"),
        ("anotherwildcard.io", "/s4", 404),
        ("specific.but.wrong.com", "/s5", 404),
        ("wildcard.io", "/s5", 404),
    ],
)
async def test_route_hostname_intersection(
    echo_factory, gateway_factory, free_port: int, host: str, path: str, expected
) -> None:
    gateway = gateway_doc(free_port, "very.specific.com", "*.wildcard.io", "*.anotherwildcard.io")
    async with deploy(
        echo_factory, gateway_factory, free_port, INTERSECTION_ROUTES, gateway=gateway
    ) as dep:
        response = await dep.client.get(path, headers={"Host": host})
    if isinstance(expected, int):
        assert (response.status_code, backend_of(response)) == (expected, None)
    else:
        assert (response.status_code, backend_of(response)) == (200, expected)
        assert response.json()["host"] == host  # forwarded unmodified, port included


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("first.com", 200),
        ("sub.first.com", 200),
        ("second.com", 200),
        ("sub.second.com:80", 200),
        ("third.com", 404),
        ("sub.third.com", 404),
    ],
)
async def test_route_hostnames_without_listener_hostname(
    echo_factory, gateway_factory, free_port: int, host: str, expected: int
) -> None:
    routes = route_doc(
        "hosts",
        _prefix_rule("/", "v2"),
        ["first.com", "sub.first.com", "second.com", "sub.second.com"],
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        response = await dep.client.get("/", headers={"Host": host})
    assert response.status_code == expected
    assert backend_of(response) == ("v2" if expected == 200 else None)


ISOLATION_PATHS = [
    "/empty-hostname",
    "/wildcard-example-com",
    "/wildcard-foo-example-com",
    "/abc-foo-example-com",
]


@pytest.mark.parametrize(
    ("host", "served"),
    [
        ("bar.com", "/empty-hostname"),
        ("bar.example.com", "/wildcard-example-com"),
        ("bar.foo.example.com", "/wildcard-foo-example-com"),
        ("abc.foo.example.com", "/abc-foo-example-com"),
        ("abc.foo.example.com:9999", "/abc-foo-example-com"),
    ],
)
@pytest.mark.parametrize(
    "route_hostnames",
    [[], ["bar.com", "*.example.com", "*.foo.example.com", "abc.foo.example.com"]],
    ids=["no-route-hostnames", "intersecting-route-hostnames"],
)
async def test_listener_isolation(
    echo_factory, gateway_factory, free_port: int, host: str, served: str, route_hostnames
) -> None:
    gateway = gateway_doc(
        free_port, None, "*.example.com", "*.foo.example.com", "abc.foo.example.com"
    )
    routes = "".join(
        route_doc(f"r{i}", _prefix_rule(path, "v1"), route_hostnames, section=f"l{i}")
        for i, path in enumerate(ISOLATION_PATHS)
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes, gateway=gateway) as dep:
        statuses = {
            path: (await dep.client.get(path, headers={"Host": host})).status_code
            for path in ISOLATION_PATHS
        }
    assert statuses == {path: 200 if path == served else 404 for path in ISOLATION_PATHS}


@pytest.mark.parametrize(
    ("host", "expected"),
    [("bar.com", "v1"), ("foo.bar.com", "v2"), ("baz.bar.com", "v3"), ("other.com", 404)],
)
async def test_listener_hostname_matching(
    echo_factory, gateway_factory, free_port: int, host: str, expected
) -> None:
    gateway = gateway_doc(free_port, "bar.com", "foo.bar.com", "*.bar.com")
    routes = "".join(
        route_doc(f"r{i}", _prefix_rule("/", backend), section=f"l{i}")
        for i, backend in enumerate(["v1", "v2", "v3"])
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes, gateway=gateway) as dep:
        response = await dep.client.get("/", headers={"Host": host})
    if isinstance(expected, int):
        assert (response.status_code, backend_of(response)) == (expected, None)
    else:
        assert (response.status_code, backend_of(response)) == (200, expected)


@pytest.mark.parametrize(
    ("listener", "route_hostnames", "host", "expected"),
    [
        # Both wildcards: the more specific one is the effective hostname.
        ("*.foo.example.com", ["*.example.com"], "a.foo.example.com", 200),
        ("*.foo.example.com", ["*.example.com"], "a.bar.example.com", 404),
        ("*.example.com", ["*.foo.example.com"], "a.foo.example.com", 200),
        ("*.example.com", ["*.foo.example.com"], "a.example.com", 404),
        # A precise route hostname several labels under the listener's wildcard.
        ("*.example.com", ["a.b.example.com"], "a.b.example.com", 200),
        ("*.example.com", ["a.b.example.com"], "b.example.com", 404),
        # A wildcard never matches its own suffix.
        (None, ["*.example.com"], "example.com", 404),
        (None, ["*.example.com"], "x.y.example.com", 200),
    ],
)
async def test_wildcard_intersections(
    echo_factory, gateway_factory, free_port: int, listener, route_hostnames, host, expected
) -> None:
    gateway = gateway_doc(free_port, listener)
    routes = route_doc("r", _prefix_rule("/", "v1"), route_hostnames)
    async with deploy(echo_factory, gateway_factory, free_port, routes, gateway=gateway) as dep:
        response = await dep.client.get("/", headers={"Host": host})
    assert response.status_code == expected
