"""Listener selection by Host, listener isolation and listener x route hostname intersection."""

from __future__ import annotations

import pytest

from gateway.compile.hostnames import intersect
from tests.fixtures.route_config import compile_yaml, condition, head, route_yaml, served_by


@pytest.mark.parametrize(
    ("listener", "route", "expected"),
    [
        (None, [], [None]),
        (None, ["a.com"], ["a.com"]),
        ("a.com", [], ["a.com"]),
        ("a.com", ["a.com", "b.com"], ["a.com"]),
        ("*.wildcard.io", ["foo.wildcard.io", "wildcard.io"], ["foo.wildcard.io"]),
        ("very.specific.com", ["*.specific.com"], ["very.specific.com"]),
        ("*.foo.example.com", ["*.example.com"], ["*.foo.example.com"]),
        ("*.example.com", ["*.foo.example.com"], ["*.foo.example.com"]),
        ("a.com", ["b.com", "*.c.com"], []),
    ],
)
def test_intersection_table(
    listener: str | None, route: list[str], expected: list[str | None]
) -> None:
    assert intersect(listener, route) == expected


INTERSECTION = compile_yaml(
    """
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {name: gw}
    spec:
      gatewayClassName: ambient
      listeners:
      - {name: specific, port: 80, protocol: HTTP, hostname: very.specific.com}
      - {name: wildcard, port: 80, protocol: HTTP, hostname: "*.wildcard.io"}
      - {name: another, port: 80, protocol: HTTP, hostname: "*.anotherwildcard.io"}
    """,
    route_yaml(
        "r1",
        """
        - matches: [{path: {value: /s1}}]
          backendRefs: [{name: v1, port: 8080}]
        """,
        hostnames='[non.matching.com, "*.nonmatchingwildcard.io", very.specific.com]',
        parent="{name: gw}",
    ),
    route_yaml(
        "r2",
        """
        - matches: [{path: {value: /s2}}]
          backendRefs: [{name: v2, port: 8080}]
        """,
        hostnames=(
            "[non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io]"
        ),
        parent="{name: gw}",
    ),
    route_yaml(
        "r3",
        """
        - matches: [{path: {value: /s3}}]
          backendRefs: [{name: v3, port: 8080}]
        """,
        hostnames='["*.specific.com"]',
        parent="{name: gw}",
    ),
    route_yaml(
        "r4",
        """
        - matches: [{path: {value: /s4}}]
          backendRefs: [{name: v1, port: 8080}]
        """,
        hostnames='["*.anotherwildcard.io"]',
        parent="{name: gw}",
    ),
    route_yaml(
        "r5",
        """
        - matches: [{path: {value: /s5}}]
          backendRefs: [{name: v1, port: 8080}]
        """,
        hostnames="[specific.but.wrong.com, wildcard.io]",
        parent="{name: gw}",
    ),
    with_gateway=False,
)


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("very.specific.com", "/s1", "v1"),
        ("very.specific.com:1234", "/s1", "v1"),
        ("non.matching.com", "/s1", None),
        ("foo.nonmatchingwildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s2", "v2"),
        ("bar.wildcard.io", "/s2", "v2"),
        ("foo.bar.wildcard.io", "/s2", "v2"),
        ("wildcard.io", "/s2", None),
        ("very.specific.com", "/s2", None),
        ("very.specific.com", "/s3", "v3"),
        ("foo.specific.com", "/s3", None),
        ("foo.anotherwildcard.io", "/s4", "v1"),
        ("bar.anotherwildcard.io", "/s4", "v1"),
        ("foo.bar.anotherwildcard.io", "/s4", "v1"),
        ("anotherwildcard.io", "/s4", None),
        ("specific.but.wrong.com", "/s5", None),
        ("wildcard.io", "/s5", None),
    ],
)
def test_hostname_intersection_routing(host: str, path: str, expected: str | None) -> None:
    assert served_by(INTERSECTION, head(path, host=host)) == expected


def test_route_without_hostname_intersection_is_not_accepted() -> None:
    status, reason, _ = condition(INTERSECTION, "r5", "Accepted")
    assert (status, reason) == ("False", "NoMatchingListenerHostname")
    assert condition(INTERSECTION, "r1", "Accepted")[:2] == ("True", "Accepted")


def test_attached_routes_count_accepted_routes_per_listener() -> None:
    attached = {entry["name"]: entry["attachedRoutes"] for entry in INTERSECTION.dump["listeners"]}
    assert attached == {"specific": 2, "wildcard": 1, "another": 1}


def test_gateway_without_hostname_uses_route_hostnames() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            "- backendRefs: [{name: v2, port: 8080}]",
            hostnames="[first.com, sub.first.com, second.com, sub.second.com]",
        )
    )
    for host in ("first.com", "sub.first.com", "second.com", "sub.second.com"):
        assert served_by(snapshot, head("/", host=host)) == "v2"
    for host in ("third.com", "sub.third.com"):
        assert served_by(snapshot, head("/", host=host)) is None


ISOLATION = compile_yaml(
    """
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {name: gw}
    spec:
      gatewayClassName: ambient
      listeners:
      - {name: empty, port: 80, protocol: HTTP}
      - {name: wild, port: 80, protocol: HTTP, hostname: "*.example.com"}
      - {name: wildfoo, port: 80, protocol: HTTP, hostname: "*.foo.example.com"}
      - {name: abc, port: 80, protocol: HTTP, hostname: abc.foo.example.com}
    """,
    *(
        route_yaml(
            name,
            f"""
            - matches: [{{path: {{value: /{name}}}}}]
              backendRefs: [{{name: v1, port: 8080}}]
            """,
            parent=f"{{name: gw, sectionName: {section}}}",
        )
        for name, section in (
            ("empty-hostname", "empty"),
            ("wildcard-example-com", "wild"),
            ("wildcard-foo-example-com", "wildfoo"),
            ("abc-foo-example-com", "abc"),
        )
    ),
    with_gateway=False,
)
ISOLATION_PATHS = (
    "/empty-hostname",
    "/wildcard-example-com",
    "/wildcard-foo-example-com",
    "/abc-foo-example-com",
)


@pytest.mark.parametrize(
    ("host", "only"),
    [
        ("bar.com", "/empty-hostname"),
        ("bar.example.com", "/wildcard-example-com"),
        ("bar.foo.example.com", "/wildcard-foo-example-com"),
        ("abc.foo.example.com", "/abc-foo-example-com"),
    ],
)
def test_listener_isolation(host: str, only: str) -> None:
    for path in ISOLATION_PATHS:
        rule = ISOLATION.routers[80].match(head(path, host=host))
        if path == only:
            assert rule is not None and rule.ref.name == path[1:]
        else:
            assert rule is None, (host, path)


def test_most_specific_listener_handles_the_request() -> None:
    snapshot = compile_yaml(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: ambient
          listeners:
          - {name: bar, port: 80, protocol: HTTP, hostname: bar.com}
          - {name: foo-bar, port: 80, protocol: HTTP, hostname: foo.bar.com}
          - {name: wild-bar, port: 80, protocol: HTTP, hostname: "*.bar.com"}
        """,
        route_yaml(
            "r-bar",
            "- backendRefs: [{name: v1, port: 8080}]",
            parent="{name: gw, sectionName: bar}",
        ),
        route_yaml(
            "r-foo",
            "- backendRefs: [{name: v2, port: 8080}]",
            parent="{name: gw, sectionName: foo-bar}",
        ),
        route_yaml(
            "r-wild",
            "- backendRefs: [{name: v3, port: 8080}]",
            parent="{name: gw, sectionName: wild-bar}",
        ),
        with_gateway=False,
    )
    assert served_by(snapshot, head("/", host="bar.com")) == "v1"
    assert served_by(snapshot, head("/", host="foo.bar.com")) == "v2"
    assert served_by(snapshot, head("/", host="baz.bar.com")) == "v3"
    assert served_by(snapshot, head("/", host="x.baz.bar.com")) == "v3"
    assert served_by(snapshot, head("/", host="foo.com")) is None


def test_listeners_on_other_ports_get_their_own_router() -> None:
    snapshot = compile_yaml(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: ambient
          listeners:
          - {name: a, port: 80, protocol: HTTP}
          - {name: b, port: 8080, protocol: HTTP}
        """,
        route_yaml("r", "- backendRefs: [{name: v1, port: 8080}]", parent="{name: gw, port: 8080}"),
        with_gateway=False,
    )
    assert sorted(snapshot.routers) == [80, 8080]
    assert served_by(snapshot, head("/"), port=8080) == "v1"
    assert served_by(snapshot, head("/"), port=80) is None
    assert [(i.name, i.port, i.protocol) for i in snapshot.listeners] == [
        ("a", 80, "HTTP"),
        ("b", 8080, "HTTP"),
    ]
