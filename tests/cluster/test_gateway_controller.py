"""The gateway in cluster mode, through the API server double (tests/fixtures/kube_api.py stands
in for kube-apiserver): objects applied with the real ``kubernetes`` client, traffic with httpx."""

from __future__ import annotations

import asyncio
import time

import httpx

from gateway.demo.echo import start_echo
from gateway.server import GatewayProcess
from tests.cluster.conftest import ClusterGateway
from tests.fixtures.cluster_objects import (
    endpoint_slice,
    eventually,
    gateway,
    gateway_class,
    http_route,
    service,
)
from tests.fixtures.gateway_process import free_port
from tests.fixtures.kube_api import GATEWAY, KubeApiServer


def _route_parent_conditions(api: KubeApiServer, name: str) -> dict[str, str]:
    route = api.get(GATEWAY, "httproutes", "default", name) or {}
    parents = (route.get("status") or {}).get("parents") or []
    return {c["type"]: c["status"] for p in parents for c in p["conditions"]}


async def test_apply_gateway_and_route_then_traffic_within_a_second(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    echo = await start_echo(name="one")
    port = free_port()
    process = await cluster_gateway()
    applied = time.monotonic()
    for obj in (
        gateway_class(),
        gateway(port),
        service("one"),
        endpoint_slice("one", echo.port),
        http_route("r1", "/", "one"),
    ):
        kube_api.apply(obj)

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1) as http:

        async def served() -> bool:
            try:
                response = await http.get("/hello")
            except httpx.TransportError:
                return False
            return response.status_code == 200 and response.headers.get("x-echo-backend") == "one"

        await eventually(served, timeout=5, what="the route to serve")
    assert time.monotonic() - applied < 1.0
    assert process.controller is not None and process.controller.compiles >= 1
    await echo.close()


async def _serving(kube_api: KubeApiServer, port: int, *backends: str) -> dict[str, int]:
    """Start an echo backend per name, apply class, Gateway, Services and slices; their ports."""
    ports: dict[str, int] = {}
    for name in backends:
        echo = await start_echo(name=name)
        ports[name] = echo.port
        kube_api.apply(service(name))
        kube_api.apply(endpoint_slice(name, echo.port))
    kube_api.apply(gateway_class())
    kube_api.apply(gateway(port))
    return ports


async def _backend(http: httpx.AsyncClient, path: str = "/") -> str | int:
    """Which echo backend answered ``path`` (its name), or the status code when not 200."""
    try:
        response = await http.get(path)
    except httpx.TransportError:
        return 0
    if response.status_code != 200:
        return response.status_code
    return response.headers.get("x-echo-backend", "?")


async def test_a_route_change_applies_and_a_deleted_backend_gives_500_and_resolved_refs_false(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    await _serving(kube_api, port, "one", "two")
    kube_api.apply(http_route("r1", "/", "one"))
    await cluster_gateway()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1) as http:
        await eventually(lambda: _is(http, "one"), what="route to one")
        kube_api.apply(http_route("r1", "/", "two"))
        took = await eventually(lambda: _is(http, "two"), what="the changed route")
        assert took < 1.0

        kube_api.apply(http_route("r1", "/", "gone"))
        await eventually(lambda: _is(http, 500), what="500 for a missing backend")
        await eventually(
            lambda: _route_parent_conditions(kube_api, "r1").get("ResolvedRefs") == "False",
            what="ResolvedRefs=False in the route's status",
        )
        assert _route_parent_conditions(kube_api, "r1")["Accepted"] == "True"


async def _is(http: httpx.AsyncClient, expected: str | int) -> bool:
    return await _backend(http) == expected


async def test_scaling_an_endpoint_slice_spreads_traffic(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    await _serving(kube_api, port, "one")
    kube_api.apply(http_route("r1", "/", "one"))
    await cluster_gateway()
    second = await start_echo(name="one-b")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1) as http:
        await eventually(lambda: _is(http, "one"), what="route to one")
        kube_api.apply(endpoint_slice("one", second.port))

        seen: set[str | int] = set()

        async def both() -> bool:
            seen.add(await _backend(http))
            return {"one", "one-b"} <= seen

        await eventually(both, what="both endpoints of the scaled Service to answer")
    await second.close()


async def test_status_written_for_class_gateway_and_route_and_not_rewritten_when_unchanged(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    await _serving(kube_api, port, "one")
    kube_api.apply(http_route("r1", "/", "one"))
    process = await cluster_gateway()
    controller = process.controller
    assert controller is not None

    def gateway_status() -> dict:
        return (kube_api.get(GATEWAY, "gateways", "default", "gw") or {}).get("status") or {}

    await eventually(
        lambda: (
            {c["type"]: c["status"] for c in gateway_status().get("conditions", [])}
            == {"Accepted": "True", "Programmed": "True"}
        ),
        what="Gateway Accepted and Programmed",
    )
    (listener,) = gateway_status()["listeners"]
    assert listener["name"] == "http" and listener["attachedRoutes"] == 1
    assert {c["type"]: c["status"] for c in listener["conditions"]}["Programmed"] == "True"
    assert {k["kind"] for k in listener["supportedKinds"]} == {"HTTPRoute", "GRPCRoute"}
    await eventually(
        lambda: "status" in (kube_api.get(GATEWAY, "gatewayclasses", "", "ambient") or {}),
        what="GatewayClass status",
    )
    klass = kube_api.get(GATEWAY, "gatewayclasses", "", "ambient") or {}
    assert [(c["type"], c["status"]) for c in klass["status"]["conditions"]] == [
        ("Accepted", "True")
    ]
    await eventually(
        lambda: (
            _route_parent_conditions(kube_api, "r1") == {"Accepted": "True", "ResolvedRefs": "True"}
        ),
        what="route Accepted and ResolvedRefs",
    )
    route = kube_api.get(GATEWAY, "httproutes", "default", "r1") or {}
    (parent,) = route["status"]["parents"]
    assert parent["controllerName"] == "ambient.dev/gateway-controller"
    assert parent["parentRef"] == {"name": "gw"}

    # A change that alters no status: the controller recompiles and writes nothing.
    assert controller.writer is not None
    writes, compiles = controller.writer.writes, controller.compiles
    service_two = service("one")
    service_two["metadata"]["labels"] = {"touched": "yes"}
    kube_api.apply(service_two)
    await eventually(lambda: controller.compiles > compiles, what="a recompile")
    await eventually(
        lambda: controller.passed_compile >= compiles + 1, what="the status pass after it"
    )
    assert controller.writer.writes == writes


async def test_an_invalid_route_gets_accepted_false_naming_the_field_and_others_keep_serving(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    await _serving(kube_api, port, "one")
    kube_api.apply(http_route("good", "/", "one"))
    await cluster_gateway()
    bad = http_route("bad", "/bad", "one")
    bad["spec"]["rules"][0]["matches"][0]["path"]["pth"] = "/typo"
    kube_api.apply(bad)
    await eventually(
        lambda: _route_parent_conditions(kube_api, "bad").get("Accepted") == "False",
        what="Accepted=False on the invalid route",
    )
    route = kube_api.get(GATEWAY, "httproutes", "default", "bad") or {}
    (condition,) = [
        c for c in route["status"]["parents"][0]["conditions"] if c["type"] == "Accepted"
    ]
    assert condition["reason"] == "InvalidField"
    assert "HTTPRoute default/bad" in condition["message"]
    assert "spec.rules[0].matches[0].path.pth" in condition["message"]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1) as http:
        assert await _backend(http, "/bad") == "one"  # served by the good route's "/" prefix
        assert await _backend(http) == "one"


async def test_a_gateway_of_another_controllers_class_is_not_served_nor_given_status(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port, other_port = free_port(), free_port()
    await _serving(kube_api, port, "one")
    kube_api.apply(gateway_class("istio", "istio.io/gateway-controller"))
    kube_api.apply(gateway(other_port, name="theirs", class_name="istio"))
    kube_api.apply(http_route("r1", "/", "one"))
    kube_api.apply(http_route("r2", "/", "one", gateway_name="theirs"))
    process = await cluster_gateway()
    await eventually(
        lambda: _route_parent_conditions(kube_api, "r1").get("Accepted") == "True",
        what="our route's status",
    )
    assert {li.port for li in process.holder.current.listeners} == {port}
    assert "status" not in (kube_api.get(GATEWAY, "gateways", "default", "theirs") or {})
    assert "status" not in (kube_api.get(GATEWAY, "gatewayclasses", "", "istio") or {})
    assert "status" not in (kube_api.get(GATEWAY, "httproutes", "default", "r2") or {})


def _endpoint_ports(process: GatewayProcess, route: str) -> set[int]:
    """The endpoint ports of every backend of ``route`` in the current snapshot."""
    return {
        endpoint["port"]
        for view in process.holder.current.dump["routes"]
        if view["name"] == route
        for rule in view["rules"]
        for choice in rule["backends"]
        for endpoint in (choice["backend"] or {}).get("endpoints", [])
    }


async def test_a_burst_of_1000_endpoint_slice_updates_is_a_few_compiles(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    ports = await _serving(kube_api, port, "one")
    kube_api.apply(http_route("r1", "/", "one"))
    process = await cluster_gateway()
    controller = process.controller
    assert controller is not None
    await eventually(lambda: _endpoint_ports(process, "r1") == {ports["one"]}, what="first config")
    before, events = controller.compiles, controller.cache.events
    burst = [endpoint_slice("one", 20000 + i, name="one-churn") for i in range(1000)]
    await asyncio.to_thread(kube_api.apply_many, burst)

    await eventually(lambda: controller.cache.events - events >= 1000, timeout=20, what="events")
    await eventually(
        lambda: _endpoint_ports(process, "r1") == {ports["one"], 20999},
        what="the last update compiled",
    )
    compiles = controller.compiles - before
    assert 1 <= compiles <= 10, f"{compiles} compiles for 1000 updates"
