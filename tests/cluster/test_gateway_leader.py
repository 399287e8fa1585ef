"""Two gateway replicas on one cluster: both serve, the Lease holder alone writes statuses, and
the other takes over when it stops. tests/fixtures/kube_api.py stands in for kube-apiserver."""

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
from tests.fixtures.kube_api import GATEWAY, KubeApiServer


def _resolved(kube_api: KubeApiServer) -> str | None:
    route = kube_api.get(GATEWAY, "httproutes", "default", "r1") or {}
    for parent in (route.get("status") or {}).get("parents") or []:
        for condition in parent["conditions"]:
            if condition["type"] == "ResolvedRefs":
                return str(condition["status"])
    return None


async def test_two_replicas_one_leader_writes_status_and_the_other_takes_over(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    port = free_port()
    echo = await start_echo(name="one")
    for obj in (
        gateway_class(),
        gateway(port),
        service("one"),
        endpoint_slice("one", echo.port),
        http_route("r1", "/", "one"),
    ):
        kube_api.apply(obj)
    first = await cluster_gateway("replica-a")
    # The second replica binds another loopback address: both serve the same Gateway.
    second = await cluster_gateway("replica-b", bind_address="127.0.0.2")
    a, b = first.controller, second.controller
    assert a is not None and b is not None
    await eventually(lambda: a.leader or b.leader, what="a leader")
    leader, follower = (a, b) if a.leader else (b, a)
    leader_process = first if leader is a else second
    await eventually(lambda: _resolved(kube_api) == "True", what="status from the leader")
    assert not follower.leader
    assert follower.writer is not None and follower.writer.writes == 0
    lease = kube_api.get("coordination.k8s.io", "leases", "default", "ambient-gateway-controller")
    assert lease is not None
    assert lease["spec"]["holderIdentity"] == leader.elector.options.identity  # type: ignore[union-attr]

    for host in ("127.0.0.1", "127.0.0.2"):
        async with httpx.AsyncClient(timeout=1) as http:
            response = await http.get(f"http://{host}:{port}/")
            assert response.headers["x-echo-backend"] == "one"

    leader_process.stop()
    await leader_process.run_until_stopped()
    await eventually(lambda: follower.leader, what="the follower to take the Lease")
    kube_api.apply(http_route("r1", "/", "gone"))
    await eventually(lambda: _resolved(kube_api) == "False", what="status from the new leader")
    # The server has the status before the writer's thread counts the write it made.
    writer = follower.writer
    assert writer is not None
    await eventually(lambda: writer.writes >= 1, what="the new leader to count its write")
    await echo.close()
