"""Conformance: which routes attach where (parentRef sectionName/port, allowedRoutes, several
Gateways) and routes that are not Accepted serving nothing (research note §1.1, §1.4, §3.3).
"""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.conformance import backend_of, deploy, gateway_doc, route_doc
from tests.fixtures.gateway_process import free_port as another_port


def _rule(prefix: str, backend: str) -> str:
    return f"""
- matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
  backendRefs: [{{name: {backend}, port: 80}}]
"""


def _two_port_gateway(port_a: int, port_b: int, allowed: str = "{namespaces: {from: All}}") -> str:
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners:
    - {{name: a, port: {port_a}, protocol: HTTP, allowedRoutes: {allowed}}}
    - {{name: b, port: {port_b}, protocol: HTTP, allowedRoutes: {allowed}}}
"""


async def _get(port: int, path: str) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        return await client.get(path)


@pytest.mark.parametrize(
    ("parent", "on_a", "on_b"),
    [
        ("{name: gw}", "v1", "v1"),
        ("{name: gw, sectionName: a}", "v1", 404),
        ("{name: gw, sectionName: b}", 404, "v1"),
        ("{name: gw, port: PORT_B}", 404, "v1"),
        ("{name: gw, sectionName: a, port: PORT_B}", 404, 404),  # NoMatchingParent
        ("{name: gw, sectionName: c}", 404, 404),
    ],
)
async def test_parent_ref_section_name_and_port(
    echo_factory, gateway_factory, free_port: int, parent: str, on_a, on_b
) -> None:
    port_b = another_port()
    route = route_doc("r", _rule("/", "v1")).replace(
        "parentRefs: [{name: gw, namespace: default}]",
        "parentRefs: [" + parent.replace("PORT_B", str(port_b)) + "]",
    )
    gateway = _two_port_gateway(free_port, port_b)
    async with deploy(
        echo_factory, gateway_factory, free_port, route, gateway=gateway, other_ports=[port_b]
    ):
        got = [await _get(port, "/x") for port in (free_port, port_b)]
    assert [backend_of(r) or r.status_code for r in got] == [on_a, on_b]


NAMESPACES = """
---
apiVersion: v1
kind: Namespace
metadata: {name: allowed, labels: {team: gw}}
---
apiVersion: v1
kind: Namespace
metadata: {name: other, labels: {team: nope}}
"""


@pytest.mark.parametrize(
    ("allowed", "namespace", "expected"),
    [
        ("{}", "default", "v1"),  # Same by default
        ("{}", "allowed", 404),
        ("{namespaces: {from: Same}}", "allowed", 404),
        ("{namespaces: {from: All}}", "other", "v1"),
        ("{namespaces: {from: Selector, selector: {matchLabels: {team: gw}}}}", "allowed", "v1"),
        ("{namespaces: {from: Selector, selector: {matchLabels: {team: gw}}}}", "other", 404),
        ("{kinds: [{kind: TLSRoute}]}", "default", 404),  # HTTPRouteDisallowedKind
    ],
)
async def test_allowed_routes(
    echo_factory, gateway_factory, free_port: int, allowed: str, namespace: str, expected
) -> None:
    port_b = another_port()
    gateway = _two_port_gateway(free_port, port_b, allowed)
    route = route_doc("r", _rule("/", "v1"), namespace=namespace) + NAMESPACES
    async with deploy(
        echo_factory,
        gateway_factory,
        free_port,
        route,
        backends=(),
        namespaces={namespace: ["v1"]},
        gateway=gateway,
        other_ports=[port_b],
    ) as dep:
        response = await dep.client.get("/")
    assert (backend_of(response) or response.status_code) == expected


async def test_route_with_two_gateway_parents(
    echo_factory, gateway_factory, free_port: int
) -> None:
    port_b = another_port()
    gateways = gateway_doc(free_port, name="gw-a") + gateway_doc(port_b, name="gw-b")
    routes = (
        route_doc("shared", _rule("/shared", "v1")).replace(
            "parentRefs: [{name: gw, namespace: default}]",
            "parentRefs: [{name: gw-a}, {name: gw-b}]",
        )
        + route_doc("a", _rule("/", "v2"), parent="gw-a")
        + route_doc("b", _rule("/", "v3"), parent="gw-b")
    )
    async with deploy(
        echo_factory, gateway_factory, free_port, routes, gateway=gateways, other_ports=[port_b]
    ):
        got = [
            backend_of(await _get(port, path))
            for port in (free_port, port_b)
            for path in ("/shared", "/other")
        ]
    assert got == ["v1", "v2", "v1", "v3"]


@pytest.mark.parametrize(
    "bad_rule",
    [
        "- matches: [{path: {type: Unknown, value: /bad}}]\n  backendRefs: [{name: v1, port: 80}]",
        "- matches: [{path: {type: RegularExpression, value: '/bad/([a-z'}}]\n"
        "  backendRefs: [{name: v1, port: 80}]",
        "- matches: [{headers: [{name: x, type: Fancy, value: y}]}]\n"
        "  backendRefs: [{name: v1, port: 80}]",
        "- matches: [{path: {type: PathPrefix, value: /bad}}]\n"
        "  filters: [{type: NoSuchFilter}]\n  backendRefs: [{name: v1, port: 80}]",
    ],
)
async def test_invalid_rule_serves_nothing_and_valid_rules_keep_serving(
    echo_factory, gateway_factory, free_port: int, bad_rule: str
) -> None:
    routes = (
        route_doc("partly", bad_rule + "\n" + _rule("/ok", "v1"))
        + route_doc("only-bad", bad_rule)
        + route_doc("good", _rule("/good", "v2"))
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        bad = await dep.client.get("/bad/x", headers={"x": "y"})
        ok = await dep.client.get("/ok")
        good = await dep.client.get("/good")
    assert (bad.status_code, backend_of(bad)) == (404, None)
    assert (backend_of(ok), backend_of(good)) == ("v1", "v2")


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
async def test_route_and_grant_api_versions(
    echo_factory, gateway_factory, free_port: int, version: str
) -> None:
    route = route_doc("r", _rule("/", "v1").replace("v1, port", "v1, namespace: backends, port"))
    route = route.replace(
        "gateway.networking.k8s.io/v1\nkind: HTTPRoute",
        f"gateway.networking.k8s.io/{version}\nkind: HTTPRoute",
    )
    grant = f"""
---
apiVersion: gateway.networking.k8s.io/{version}
kind: ReferenceGrant
metadata: {{name: g, namespace: backends}}
spec:
  from: [{{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}}]
  to: [{{group: '', kind: Service}}]
"""
    async with deploy(
        echo_factory,
        gateway_factory,
        free_port,
        route + grant,
        backends=(),
        namespaces={"backends": ["v1"]},
    ) as dep:
        assert backend_of(await dep.client.get("/")) == "v1"
