"""GRPCRoute routing: the GATEWAY-GRPC conformance cases and GRPCRoute precedence."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from gateway.request import RequestHead
from gateway.snapshot import CompiledRule, Snapshot
from tests.fixtures.grpc_config import ECHO, grpc_head, grpc_route_yaml
from tests.fixtures.route_config import compile_yaml


def served(snapshot: Snapshot, request: RequestHead, port: int = 80) -> str | None:
    """The Service of the first backend of the winning rule, or None (UNIMPLEMENTED)."""
    rule = snapshot.routers[port].match(request)
    if rule is None:
        return None
    backend = rule.choices[0].backend if rule.choices else None
    return backend.destination.service_name if backend is not None else "<no backend>"


def status(snapshot: Snapshot, name: str, kind: str = "GRPCRoute") -> dict[str, tuple[str, str]]:
    """type -> (status, reason) of a route's first parent."""
    route = next(s for s in snapshot.statuses if s.kind == kind and s.name == name)
    return {c.type: (c.status, c.reason) for c in route.parents[0].conditions}


def test_exact_method_matching() -> None:
    snapshot = compile_yaml(
        grpc_route_yaml(
            "exact",
            f"""
            - matches: [{{method: {{service: {ECHO}, method: Echo}}}}]
              backendRefs: [{{name: v1, port: 8080}}]
            - matches: [{{method: {{service: {ECHO}, method: EchoTwo}}}}]
              backendRefs: [{{name: v2, port: 8080}}]
            """,
        )
    )
    assert served(snapshot, grpc_head(ECHO, "Echo")) == "v1"
    assert served(snapshot, grpc_head(ECHO, "EchoTwo")) == "v2"
    assert served(snapshot, grpc_head(ECHO, "EchoThree")) is None
    assert status(snapshot, "exact")["Accepted"] == ("True", "Accepted")


def test_compiled_grpc_rules_say_they_are_grpc() -> None:
    snapshot = compile_yaml(
        grpc_route_yaml("g", "- backendRefs: [{name: v1, port: 8080}]", extra_meta="")
    )
    rule = snapshot.routers[80].match(grpc_head(ECHO, "Echo"))
    assert rule is not None
    assert (rule.ref.kind, rule.ref.name, rule.ref.rule_index) == ("GRPCRoute", "g", 0)


HEADER_RULES = """
- matches: [{headers: [{name: version, value: one}]}]
  backendRefs: [{name: v1, port: 8080}]
- matches: [{headers: [{name: version, value: two}]}]
  backendRefs: [{name: v2, port: 8080}]
- matches: [{headers: [{name: version, value: two}, {name: color, value: orange}]}]
  backendRefs: [{name: v1, port: 8080}]
- matches: [{headers: [{name: color, value: blue}]}, {headers: [{name: color, value: green}]}]
  backendRefs: [{name: v1, port: 8080}]
- matches: [{headers: [{name: color, value: red}]}, {headers: [{name: color, value: yellow}]}]
  backendRefs: [{name: v2, port: 8080}]
- matches: [{headers: [{name: color, type: RegularExpression, value: "pur.le"}]}]
  backendRefs: [{name: v3, port: 8080}]
"""


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({"version": "one"}, "v1"),
        ({"version": "two"}, "v2"),
        ({"version": "two", "color": "orange"}, "v1"),  # two header matches beat one
        ({"Version": "two", "Color": "orange"}, "v1"),  # names are case-insensitive
        ({"color": "blue"}, "v1"),
        ({"color": "green"}, "v1"),
        ({"color": "red"}, "v2"),
        ({"color": "yellow"}, "v2"),
        ({"version": "one", "color": "red"}, "v1"),  # equal counts: rule order
        ({"color": "purple"}, "v3"),
        ({"color": "pur-le-x"}, None),  # regex is a full match
        ({"version": "three"}, None),
        ({"color": "Blue"}, None),  # values are case-sensitive
        ({}, None),
    ],
)
def test_header_matching(metadata: dict[str, str], expected: str | None) -> None:
    snapshot = compile_yaml(grpc_route_yaml("headers", HEADER_RULES))
    assert served(snapshot, grpc_head(ECHO, "Echo", metadata=metadata)) == expected


LISTENERS = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw}
spec:
  gatewayClassName: ambient
  listeners:
  - {name: listener-1, port: 80, protocol: HTTP, hostname: bar.com}
  - {name: listener-2, port: 80, protocol: HTTP, hostname: foo.bar.com}
  - {name: listener-3, port: 80, protocol: HTTP, hostname: "*.bar.com"}
  - {name: listener-4, port: 80, protocol: HTTP, hostname: "*.foo.com"}
"""


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("bar.com", "v1"),
        ("foo.bar.com", "v2"),
        ("baz.bar.com", "v3"),
        ("boo.bar.com", "v3"),
        ("multiple.prefixes.bar.com", "v3"),
        ("multiple.prefixes.foo.com", "v3"),
        ("foo.bar.com:8080", "v2"),  # the port in :authority is ignored
        ("foo.com", None),
        ("no.matching.host", None),
    ],
)
def test_listener_hostname_matching(host: str, expected: str | None) -> None:
    def attached(name: str, backend: str, *sections: str) -> str:
        parents = ", ".join(f"{{name: gw, sectionName: {s}}}" for s in sections)
        return grpc_route_yaml(
            name, f"- backendRefs: [{{name: {backend}, port: 8080}}]", parent=parents
        )

    snapshot = compile_yaml(
        LISTENERS,
        attached("backend-v1", "v1", "listener-1"),
        attached("backend-v2", "v2", "listener-2"),
        attached("backend-v3", "v3", "listener-3", "listener-4"),
        with_gateway=False,
    )
    assert served(snapshot, grpc_head(ECHO, "Echo", host=host)) == expected


def test_weights_compile_and_split_70_30_0() -> None:
    snapshot = compile_yaml(
        grpc_route_yaml(
            "weighted",
            """
            - backendRefs:
              - {name: v1, port: 8080, weight: 70}
              - {name: v2, port: 8080, weight: 30}
              - {name: v3, port: 8080, weight: 0}
            """,
        )
    )
    rule = snapshot.routers[80].match(grpc_head(ECHO, "Echo"))
    assert isinstance(rule, CompiledRule)
    assert [c.weight for c in rule.choices] == [70, 30, 0]
    rng = random.Random(5)
    counts: Counter[str] = Counter()
    for _ in range(10_000):
        choice = rule.choose(rng)
        assert choice is not None and choice.backend is not None
        counts[choice.backend.destination.service_name] += 1
    assert abs(counts["v1"] / 10_000 - 0.7) < 0.05
    assert abs(counts["v2"] / 10_000 - 0.3) < 0.05
    assert counts["v3"] == 0


def precedence_snapshot(*routes: tuple[str, str, str]) -> Snapshot:
    """One GRPCRoute per (name, match YAML, backend); earlier routes are older."""
    docs = [
        grpc_route_yaml(
            name,
            f"- matches: [{match}]\n  backendRefs: [{{name: {backend}, port: 8080}}]",
            extra_meta=f", creationTimestamp: '2024-01-0{i + 1}T00:00:00Z'",
        )
        for i, (name, match, backend) in enumerate(routes)
    ]
    return compile_yaml(*docs)


def test_service_and_method_beat_service_only_whatever_the_age() -> None:
    snapshot = precedence_snapshot(
        ("service-only", "{method: {service: svc.Echo}}", "v1"),
        ("both", "{method: {service: svc.Echo, method: Get}}", "v2"),
    )
    assert served(snapshot, grpc_head("svc.Echo", "Get")) == "v2"
    assert served(snapshot, grpc_head("svc.Echo", "Put")) == "v1"
    assert served(snapshot, grpc_head("svc.Other", "Get")) is None


def test_longer_service_beats_shorter() -> None:
    snapshot = precedence_snapshot(
        ("short", "{method: {type: RegularExpression, service: 'com\\..*'}}", "v1"),
        ("long", "{method: {type: RegularExpression, service: 'com\\.example\\..*'}}", "v2"),
    )
    assert served(snapshot, grpc_head("com.example.Echo", "Get")) == "v2"
    assert served(snapshot, grpc_head("com.other.Echo", "Get")) == "v1"


def test_service_beats_method_which_beats_no_method_match() -> None:
    snapshot = precedence_snapshot(
        ("everything", "{headers: [{name: x, value: y}]}", "v1"),
        ("method-only", "{method: {method: Get}}", "v2"),
        ("service-only", "{method: {service: svc.Echo}}", "v3"),
    )
    assert served(snapshot, grpc_head("svc.Echo", "Get", metadata={"x": "y"})) == "v3"
    assert served(snapshot, grpc_head("other.Svc", "Get", metadata={"x": "y"})) == "v2"
    assert served(snapshot, grpc_head("other.Svc", "Put", metadata={"x": "y"})) == "v1"
    assert served(snapshot, grpc_head("other.Svc", "Put")) is None


def test_header_matches_count_only_after_service_and_method() -> None:
    snapshot = precedence_snapshot(
        (
            "headers",
            "{method: {service: svc.Echo},"
            " headers: [{name: a, value: '1'}, {name: b, value: '2'}]}",
            "v1",
        ),
        ("method", "{method: {service: svc.Echo, method: Get}}", "v2"),
        ("one-header", "{method: {service: svc.Echo}, headers: [{name: a, value: '1'}]}", "v3"),
    )
    both = {"a": "1", "b": "2"}
    assert served(snapshot, grpc_head("svc.Echo", "Get", metadata=both)) == "v2"
    assert served(snapshot, grpc_head("svc.Echo", "Put", metadata=both)) == "v1"
    assert served(snapshot, grpc_head("svc.Echo", "Put", metadata={"a": "1"})) == "v3"


def test_ties_break_on_age_then_namespace_and_name_then_rule_order() -> None:
    older = precedence_snapshot(
        ("b-old", "{method: {service: svc.Echo, method: Get}}", "v1"),
        ("a-new", "{method: {service: svc.Echo, method: Get}}", "v2"),
    )
    assert served(older, grpc_head("svc.Echo", "Get")) == "v1"
    same_age = compile_yaml(
        grpc_route_yaml("b", "- backendRefs: [{name: v1, port: 8080}]"),
        grpc_route_yaml(
            "a",
            "- backendRefs: [{name: v2, port: 8080}]\n- backendRefs: [{name: v3, port: 8080}]",
        ),
    )
    assert served(same_age, grpc_head("svc.Echo", "Get")) == "v2"


def test_exact_hostname_beats_wildcard_before_method_specificity() -> None:
    snapshot = compile_yaml(
        grpc_route_yaml(
            "wild",
            "- matches: [{method: {service: svc.Echo, method: Get}}]\n"
            "  backendRefs: [{name: v1, port: 8080}]",
            hostnames="['*.example.com']",
        ),
        grpc_route_yaml(
            "exact", "- backendRefs: [{name: v2, port: 8080}]", hostnames="[api.example.com]"
        ),
    )
    assert served(snapshot, grpc_head("svc.Echo", "Get", host="api.example.com")) == "v2"
    assert served(snapshot, grpc_head("svc.Echo", "Get", host="web.example.com")) == "v1"


def test_grpc_filters_and_unavailable_backends_compile_like_httproute() -> None:
    snapshot = compile_yaml(
        grpc_route_yaml(
            "filters",
            """
            - filters:
              - type: RequestHeaderModifier
                requestHeaderModifier: {set: [{name: x-tenant, value: blue}]}
              - type: ResponseHeaderModifier
                responseHeaderModifier: {add: [{name: x-served-by, value: gw}]}
              - type: RequestMirror
                requestMirror: {backendRef: {name: v3, port: 8080}, percent: 50}
              backendRefs:
              - {name: v1, port: 8080, weight: 1}
              - {name: missing, port: 8080, weight: 1}
            """,
        )
    )
    request = grpc_head(ECHO, "Echo")
    rule = snapshot.routers[80].match(request)
    assert rule is not None
    assert len(rule.request_filters) == 1 and len(rule.response_filters) == 1
    assert [m.fraction for m in rule.mirrors] == [0.5]
    rule.request_filters[0].apply(request)
    assert request.get("x-tenant") == "blue"
    assert rule.choices[1].backend is None and "missing" in (rule.choices[1].error or "")
    assert status(snapshot, "filters")["ResolvedRefs"] == ("False", "BackendNotFound")


def test_cross_namespace_backend_needs_a_grant_from_grpcroute() -> None:
    def grant(kind: str) -> str:
        return f"""
        apiVersion: gateway.networking.k8s.io/v1beta1
        kind: ReferenceGrant
        metadata: {{name: g, namespace: default}}
        spec:
          from: [{{group: gateway.networking.k8s.io, kind: {kind}, namespace: apps}}]
          to: [{{group: "", kind: Service}}]
        """

    route = grpc_route_yaml(
        "r", "- backendRefs: [{name: v1, namespace: default, port: 8080}]", namespace="apps"
    )
    allowed = compile_yaml(route, grant("GRPCRoute"))
    assert served(allowed, grpc_head(ECHO, "Echo")) == "v1"
    refused = compile_yaml(route, grant("HTTPRoute"))
    refs = next(s for s in refused.statuses if s.name == "r").parents[0].conditions[1]
    assert (refs.status, refs.reason) == ("False", "RefNotPermitted")
    assert served(refused, grpc_head(ECHO, "Echo")) == "<no backend>"


def test_listener_limited_to_httproutes_does_not_admit_grpcroutes() -> None:
    snapshot = compile_yaml(
        """
        apiVersion: gateway.networking.k8s.io/v1
        kind: Gateway
        metadata: {name: gw}
        spec:
          gatewayClassName: ambient
          listeners:
          - {name: web, port: 80, protocol: HTTP, allowedRoutes: {kinds: [{kind: HTTPRoute}]}}
        """,
        grpc_route_yaml("g", "- backendRefs: [{name: v1, port: 8080}]"),
        with_gateway=False,
    )
    assert status(snapshot, "g")["Accepted"] == ("False", "NotAllowedByListeners")
    assert served(snapshot, grpc_head(ECHO, "Echo")) is None


def test_grpcroute_counts_as_attached_and_appears_in_the_dump() -> None:
    snapshot = compile_yaml(
        grpc_route_yaml(
            "g",
            f"- matches: [{{method: {{service: {ECHO}, method: Echo}}}}]\n"
            "  backendRefs: [{name: v1, port: 8080}]",
        )
    )
    listener = snapshot.dump["listeners"][0]
    assert listener["attachedRoutes"] == 1
    route = next(r for r in snapshot.dump["routes"] if r["kind"] == "GRPCRoute")
    match = route["rules"][0]["matches"][0]
    assert match["grpcMethod"] == {"type": "Exact", "service": ECHO, "method": "Echo"}
    assert match["path"] == {"type": "Exact", "value": f"/{ECHO}/Echo"}
    gateway_status = [s for s in snapshot.statuses if s.kind == "GRPCRoute"]
    assert [s.name for s in gateway_status] == ["g"]


def test_named_and_unnamed_rules_route() -> None:
    snapshot = compile_yaml(
        grpc_route_yaml(
            "named",
            f"""
            - name: first
              matches: [{{method: {{service: {ECHO}, method: Echo}}}}]
              backendRefs: [{{name: v1, port: 8080}}]
            - matches: [{{method: {{service: {ECHO}, method: EchoTwo}}}}]
              backendRefs: [{{name: v2, port: 8080}}]
            """,
        )
    )
    named = snapshot.routers[80].match(grpc_head(ECHO, "Echo"))
    unnamed = snapshot.routers[80].match(grpc_head(ECHO, "EchoTwo"))
    assert named is not None and named.ref.rule_name == "first"
    assert unnamed is not None and unnamed.ref.rule_name is None and unnamed.ref.rule_index == 1
