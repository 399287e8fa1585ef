"""Cluster mode when the API misbehaves: cut watches, compacted history, the server down.

tests/fixtures/kube_api.py stands in for kube-apiserver (none can run here)."""

from __future__ import annotations

import httpx

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
from tests.fixtures.kube_api import KubeApiServer


async def _backend(http: httpx.AsyncClient) -> str | int:
    try:
        response = await http.get("/")
    except httpx.TransportError:
        return 0
    return (
        response.headers.get("x-echo-backend", "?")
        if response.status_code == 200
        else (response.status_code)
    )


async def _two_backends(kube_api: KubeApiServer, port: int) -> None:
    for name in ("one", "two"):
        echo = await start_echo(name=name)
        kube_api.apply(service(name))
        kube_api.apply(endpoint_slice(name, echo.port))
    kube_api.apply(gateway_class())
    kube_api.apply(gateway(port))
    kube_api.apply(http_route("r1", "/", "one"))


async def test_an_update_made_while_the_watch_is_cut_is_not_lost(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    await _two_backends(kube_api, port)
    process = await cluster_gateway()
    assert process.controller is not None
    lists = {s: i.lists for s, i in process.controller.informers.items()}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1) as http:
        await eventually(lambda: _is(http, "one"), what="route to one")
        # The server refuses service and cuts every stream; the change lands meanwhile.
        kube_api.set_down(True)
        kube_api.apply(http_route("r1", "/", "two"))
        assert await _backend(http) == "one"  # the data plane keeps the last config
        kube_api.set_down(False)
        await eventually(lambda: _is(http, "two"), what="the change made while cut")
    # Resumed from the last resourceVersion: no informer listed again.
    assert {s: i.lists for s, i in process.controller.informers.items()} == lists


async def test_a_compacted_resource_version_relists_and_the_change_arrives(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    await _two_backends(kube_api, port)
    process = await cluster_gateway()
    controller = process.controller
    assert controller is not None
    routes = next(s for s in controller.informers if s.resource.kind == "HTTPRoute")
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1) as http:
        await eventually(lambda: _is(http, "one"), what="route to one")
        kube_api.set_down(True)
        kube_api.apply(http_route("r1", "/", "two"))
        kube_api.compact()  # the version the informers resume from is gone: 410
        kube_api.set_down(False)
        await eventually(lambda: _is(http, "two"), what="the change after a relist")
    assert controller.informers[routes].lists == 2


async def test_watches_cut_mid_stream_recover(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    await _two_backends(kube_api, port)
    await cluster_gateway()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=1) as http:
        await eventually(lambda: _is(http, "one"), what="route to one")
        watching = kube_api.watch_count()
        kube_api.drop_watches()
        kube_api.apply(http_route("r1", "/", "two"))
        await eventually(lambda: _is(http, "two"), what="the change after the cut")
        await eventually(lambda: kube_api.watch_count() == watching, what="every watch back")


async def _is(http: httpx.AsyncClient, expected: str | int) -> bool:
    return await _backend(http) == expected
