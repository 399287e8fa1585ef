"""HTTPRoute vs GRPCRoute on one listener with intersecting hostnames: exactly one is accepted."""

from __future__ import annotations

from gateway.snapshot import Snapshot
from tests.fixtures.grpc_config import ECHO, grpc_head, grpc_route_yaml
from tests.fixtures.route_config import compile_yaml, head, route_yaml

OLD = ", creationTimestamp: '2024-01-01T00:00:00Z'"
NEW = ", creationTimestamp: '2024-06-01T00:00:00Z'"
TO_V1 = "- backendRefs: [{name: v1, port: 8080}]"
TO_V2 = "- backendRefs: [{name: v2, port: 8080}]"


def accepted(snapshot: Snapshot, kind: str, name: str, parent: int = 0) -> tuple[str, str, str]:
    route = next(s for s in snapshot.statuses if s.kind == kind and s.name == name)
    c = route.parents[parent].conditions[0]
    return c.status, c.reason, c.message


def kind_served(snapshot: Snapshot, host: str = "example.com") -> str | None:
    rule = snapshot.routers[80].match(grpc_head(ECHO, "Echo", host=host))
    return rule.ref.kind if rule is not None else None


def test_older_httproute_wins_and_the_grpcroute_is_not_accepted() -> None:
    snapshot = compile_yaml(
        route_yaml("web", TO_V1, extra_meta=OLD),
        grpc_route_yaml("rpc", TO_V2, extra_meta=NEW),
    )
    assert accepted(snapshot, "HTTPRoute", "web")[:2] == ("True", "Accepted")
    status, reason, message = accepted(snapshot, "GRPCRoute", "rpc")
    assert (status, reason) == ("False", "Conflicted")
    assert "HTTPRoute default/web" in message and "default/gw/http" in message
    assert "not merged" in message
    assert kind_served(snapshot) == "HTTPRoute"
    assert snapshot.dump["listeners"][0]["attachedRoutes"] == 1


def test_older_grpcroute_wins_over_a_newer_httproute() -> None:
    snapshot = compile_yaml(
        route_yaml("web", TO_V1, extra_meta=NEW),
        grpc_route_yaml("rpc", TO_V2, extra_meta=OLD),
    )
    assert accepted(snapshot, "GRPCRoute", "rpc")[:2] == ("True", "Accepted")
    assert accepted(snapshot, "HTTPRoute", "web")[:2] == ("False", "Conflicted")
    assert kind_served(snapshot) == "GRPCRoute"
    assert snapshot.routers[80].match(head("/")) is not None  # the GRPCRoute matches every path


def test_same_age_breaks_on_namespace_and_name() -> None:
    snapshot = compile_yaml(route_yaml("b-web", TO_V1), grpc_route_yaml("a-rpc", TO_V2))
    assert accepted(snapshot, "GRPCRoute", "a-rpc")[0] == "True"
    assert accepted(snapshot, "HTTPRoute", "b-web")[:2] == ("False", "Conflicted")


def test_intersecting_wildcard_and_exact_hostnames_conflict() -> None:
    snapshot = compile_yaml(
        route_yaml("web", TO_V1, hostnames="['*.example.com']", extra_meta=OLD),
        grpc_route_yaml("rpc", TO_V2, hostnames="[api.example.com]", extra_meta=NEW),
    )
    assert accepted(snapshot, "GRPCRoute", "rpc")[:2] == ("False", "Conflicted")
    assert kind_served(snapshot, "api.example.com") == "HTTPRoute"


def test_disjoint_hostnames_let_both_kinds_share_a_listener() -> None:
    snapshot = compile_yaml(
        route_yaml("web", TO_V1, hostnames="[www.example.com]", extra_meta=OLD),
        grpc_route_yaml("rpc", TO_V2, hostnames="[api.example.com]", extra_meta=NEW),
    )
    assert accepted(snapshot, "HTTPRoute", "web")[0] == "True"
    assert accepted(snapshot, "GRPCRoute", "rpc")[0] == "True"
    assert kind_served(snapshot, "www.example.com") == "HTTPRoute"
    assert kind_served(snapshot, "api.example.com") == "GRPCRoute"


def test_routes_of_the_same_kind_never_conflict() -> None:
    snapshot = compile_yaml(
        grpc_route_yaml("a", TO_V1, extra_meta=OLD), grpc_route_yaml("b", TO_V2, extra_meta=NEW)
    )
    assert accepted(snapshot, "GRPCRoute", "a")[0] == "True"
    assert accepted(snapshot, "GRPCRoute", "b")[0] == "True"


def test_a_loser_on_one_listener_keeps_its_other_listener() -> None:
    gateway = """
    apiVersion: gateway.networking.k8s.io/v1
    kind: Gateway
    metadata: {name: gw}
    spec:
      gatewayClassName: ambient
      listeners:
      - {name: shared, port: 80, protocol: HTTP}
      - {name: rpc-only, port: 9090, protocol: HTTP}
    """
    snapshot = compile_yaml(
        gateway,
        route_yaml("web", TO_V1, parent="{name: gw, sectionName: shared}", extra_meta=OLD),
        grpc_route_yaml(
            "rpc",
            TO_V2,
            parent="{name: gw, sectionName: shared}, {name: gw, sectionName: rpc-only}",
            extra_meta=NEW,
        ),
        with_gateway=False,
    )
    assert accepted(snapshot, "GRPCRoute", "rpc", parent=0)[:2] == ("False", "Conflicted")
    assert accepted(snapshot, "GRPCRoute", "rpc", parent=1)[:2] == ("True", "Accepted")
    assert kind_served(snapshot) == "HTTPRoute"
    rule = snapshot.routers[9090].match(grpc_head(ECHO, "Echo", port=9090))
    assert rule is not None and rule.ref.kind == "GRPCRoute"
