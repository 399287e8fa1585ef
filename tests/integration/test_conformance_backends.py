"""Conformance: backendRef weights, invalid and unready backends, cross-namespace references.

Research note §1.6, §2.6, §3.3 (HTTPRouteWeight, HTTPRouteInvalid*, HTTPRouteReferenceGrant,
HTTPRouteInvalidReferenceGrant, HTTPRouteNoBackendRefs, HTTPRouteServiceTypes).
"""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from tests.fixtures.conformance import backend_of, deploy, not_ready_service_doc, route_doc

REQUESTS = 500


def _rule(backends: str, prefix: str = "/") -> str:
    return f"""
- matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
  backendRefs: {backends}
"""


async def _spread(dep, path: str, count: int = REQUESTS, concurrency: int = 10) -> Counter[object]:
    """Send ``count`` GETs, ``concurrency`` at a time; count answers by backend (else status)."""
    seen: Counter[object] = Counter()

    async def worker(n: int) -> None:
        for _ in range(n):
            response = await dep.client.get(path)
            seen[backend_of(response) or response.status_code] += 1

    await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
    return seen


async def test_weights_70_30_0(echo_factory, gateway_factory, free_port: int) -> None:
    routes = route_doc(
        "weights",
        _rule(
            "[{name: v1, port: 80, weight: 70}, {name: v2, port: 80, weight: 30},"
            " {name: v3, port: 80, weight: 0}]"
        ),
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        seen = await _spread(dep, "/weights")
        v3_requests = dep.requests_to("v3")
    assert set(seen) == {"v1", "v2"}
    assert abs(seen["v1"] / REQUESTS - 0.7) <= 0.05
    assert abs(seen["v2"] / REQUESTS - 0.3) <= 0.05
    assert v3_requests == 0


async def test_all_weights_zero_reach_no_backend(
    echo_factory, gateway_factory, free_port: int
) -> None:
    routes = route_doc(
        "zero", _rule("[{name: v1, port: 80, weight: 0}, {name: v2, port: 80, weight: 0}]")
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        statuses = {(await dep.client.get("/")).status_code for _ in range(5)}
        reached = dep.requests_to("v1") + dep.requests_to("v2")
    assert statuses <= {500, 503} and len(statuses) == 1
    assert reached == 0


@pytest.mark.parametrize(
    ("backend_ref", "status"),
    [
        ("{name: missing, port: 80}", 500),  # BackendNotFound
        ("{group: unknownkind.example.com, kind: NonExistent, name: v1}", 500),  # InvalidKind
        ("{name: v1, port: 81}", 500),  # the Service has no such port
        ("{name: unready, port: 80}", 503),  # no ready endpoints
    ],
)
async def test_invalid_or_unready_backend(
    echo_factory, gateway_factory, free_port: int, backend_ref: str, status: int
) -> None:
    routes = route_doc("invalid", _rule(f"[{backend_ref}]")) + not_ready_service_doc("unready", 1)
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        response = await dep.client.get("/")
        assert (response.status_code, backend_of(response)) == (status, None)
        assert dep.requests_to("v1") == 0


@pytest.mark.parametrize(("invalid", "status"), [("missing", 500), ("unready", 503)])
async def test_half_of_the_traffic_fails_with_one_bad_backend_of_two(
    echo_factory, gateway_factory, free_port: int, invalid: str, status: int
) -> None:
    routes = route_doc("half", _rule(f"[{{name: v1, port: 80}}, {{name: {invalid}, port: 80}}]"))
    routes += not_ready_service_doc("unready", 1)
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        seen = await _spread(dep, "/", 200)
    assert set(seen) == {"v1", status}
    assert abs(seen[status] / 200 - 0.5) <= 0.05


@pytest.mark.parametrize("idle", ["missing", "unready", "v2"])
async def test_weight_zero_backend_never_answers_even_when_invalid(
    echo_factory, gateway_factory, free_port: int, idle: str
) -> None:
    routes = route_doc(
        "idle", _rule(f"[{{name: v1, port: 80}}, {{name: {idle}, port: 80, weight: 0}}]")
    )
    routes += not_ready_service_doc("unready", 1)
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        seen = await _spread(dep, "/", 50)
    assert seen == {"v1": 50}


@pytest.mark.parametrize(
    "rule",
    [
        "- matches: [{path: {type: PathPrefix, value: /none}}]",
        "- matches: [{path: {type: PathPrefix, value: /none}}]\n  backendRefs: []",
    ],
)
async def test_rule_without_backend_refs_answers_500(
    echo_factory, gateway_factory, free_port: int, rule: str
) -> None:
    routes = route_doc("none", rule + "\n" + _rule("[{name: v1, port: 80}]"))
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        assert (await dep.client.get("/none")).status_code == 500
        assert backend_of(await dep.client.get("/")) == "v1"


GRANT = """
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {{name: grant, namespace: {namespace}}}
spec:
  from: [{{group: {from_group}, kind: {from_kind}, namespace: {from_namespace}}}]
  to: [{{group: '{to_group}', kind: {to_kind}{to_name}}}]
"""

VALID = {
    "namespace": "backends",
    "from_group": "gateway.networking.k8s.io",
    "from_kind": "HTTPRoute",
    "from_namespace": "default",
    "to_group": "",
    "to_kind": "Service",
    "to_name": "",
}


@pytest.mark.parametrize(
    ("grant", "expected"),
    [
        (None, 500),
        (VALID, "v2"),
        (VALID | {"to_name": ", name: v2"}, "v2"),
        (VALID | {"namespace": "default"}, 500),
        (VALID | {"from_group": "wrong.example.com"}, 500),
        (VALID | {"from_kind": "GRPCRoute"}, 500),
        (VALID | {"from_namespace": "other"}, 500),
        (VALID | {"to_group": "wrong.example.com"}, 500),
        (VALID | {"to_kind": "Secret"}, 500),
        (VALID | {"to_name": ", name: not-v2"}, 500),
    ],
)
async def test_cross_namespace_backend_needs_a_reference_grant(
    echo_factory, gateway_factory, free_port: int, grant, expected
) -> None:
    routes = route_doc(
        "cross",
        _rule("[{name: v2, namespace: backends, port: 80}]", "/v2")
        + _rule("[{name: v1, port: 80}]"),
    )
    if grant is not None:
        routes += GRANT.format(**grant)
    async with deploy(
        echo_factory,
        gateway_factory,
        free_port,
        routes,
        backends=("v1",),
        namespaces={"backends": ["v2"]},
    ) as dep:
        response = await dep.client.get("/v2")
        catch_all = await dep.client.get("/")
    assert (backend_of(response) or response.status_code) == expected
    assert backend_of(catch_all) == "v1"  # the rest of the route keeps serving


MULTI_PORT = """
---
apiVersion: v1
kind: Service
metadata: {{name: multi, namespace: default}}
spec:
  ports:
    - {{name: http, port: 80, targetPort: 8080}}
    - {{name: metrics, port: 9090, targetPort: admin}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: multi-a, namespace: default, labels: {{kubernetes.io/service-name: multi}}}}
addressType: IPv4
ports: [{{name: metrics, port: {v2}}}, {{name: http, port: {v1}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: spread-a, namespace: default, labels: {{kubernetes.io/service-name: spread}}}}
addressType: IPv4
ports: [{{name: http, port: {v1}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: true}}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: spread-b, namespace: default, labels: {{kubernetes.io/service-name: spread}}}}
addressType: IPv4
ports: [{{name: http, port: {v2}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: spread-c, namespace: default, labels: {{kubernetes.io/service-name: spread}}}}
addressType: IPv4
ports: [{{name: http, port: {v3}}}]
endpoints: [{{addresses: [127.0.0.1], conditions: {{ready: false}}}}]
---
apiVersion: v1
kind: Service
metadata: {{name: spread, namespace: default}}
spec:
  ports: [{{name: http, port: 80}}]
"""


async def test_service_ports_map_to_slice_ports_by_name(
    echo_factory, gateway_factory, free_port: int
) -> None:
    routes = route_doc(
        "ports",
        _rule("[{name: multi, port: 80}]", "/http")
        + _rule("[{name: multi, port: 9090}]", "/metrics")
        + _rule("[{name: spread, port: 80}]", "/spread"),
    )
    async with deploy(
        echo_factory, gateway_factory, free_port, lambda ports: routes + MULTI_PORT.format(**ports)
    ) as dep:
        http = await dep.client.get("/http")
        metrics = await dep.client.get("/metrics")
        spread = {backend_of(await dep.client.get("/spread")) for _ in range(20)}
    assert (backend_of(http), backend_of(metrics)) == ("v1", "v2")
    assert spread == {"v1", "v2"}  # every slice of the Service counts; not-ready endpoints never
