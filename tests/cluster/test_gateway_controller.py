"""The gateway in cluster mode, through the API server double (tests/fixtures/kube_api.py stands
in for kube-apiserver): objects applied with the real ``kubernetes`` client, traffic with httpx."""

from __future__ import annotations

import asyncio
import time

import httpx
from kubernetes import client

from gateway.demo.echo import start_echo
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
