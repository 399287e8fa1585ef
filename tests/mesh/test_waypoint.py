"""Waypoints: use-waypoint labels in mesh.yaml, outbound routes, traffic through a waypoint."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from mesh.errors import ConfigError, MeshError
from mesh.identity import SpiffeId
from mesh.state import parse_mesh
from mesh.ztunnel.metrics import TcpMetrics, sample
from mesh.ztunnel.outbound import Forward, Outbound
from tests.mesh.conftest import (
    CLIENT_IP,
    SERVER_IP,
    SERVICE_VIP,
    SLEEP,
    ClusterFactory,
    base_docs,
    creds_for,
    namespace,
    pod,
    roundtrip,
    service,
)
from tests.mesh.waypoint import StandInWaypoint

WAYPOINT_IP = "127.0.10.14"
DIRECT_VIP = "10.96.0.11"
ECHO = SpiffeId("cluster.local", "default", "echo")
WAYPOINT = SpiffeId("cluster.local", "default", "waypoint")


def waypoint_gateway(name: str = "waypoint", ns: str = "default", **labels: str) -> dict[str, Any]:
    """A Gateway of class istio-waypoint."""
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": name, "namespace": ns, "labels": labels},
        "spec": {"gatewayClassName": "istio-waypoint"},
    }


def waypoint_pod(ip: str, node: str, name: str = "waypoint", ns: str = "default") -> dict[str, Any]:
    """A waypoint instance: labelled with its Gateway's name, not captured by ztunnel."""
    return pod(
        f"{name}-0",
        ip,
        node,
        name,
        ns,
        **{
            "gateway.networking.k8s.io/gateway-name": name,
            "istio.io/dataplane-mode": "none",
        },
    )


def labelled(doc: dict[str, Any], **labels: str) -> dict[str, Any]:
    """A copy of a document with extra metadata labels."""
    meta = doc["metadata"]
    return {**doc, "metadata": {**meta, "labels": {**meta.get("labels", {}), **labels}}}


USE = "istio.io/use-waypoint"


def test_use_waypoint_labels_resolve(caplog: pytest.LogCaptureFixture) -> None:
    infra_wp = {
        **service("wp2", "10.96.9.2", 15008, 15008, ns="infra"),
        "metadata": {
            "name": "wp2",
            "namespace": "infra",
            "labels": {"istio.io/waypoint-for": "all"},
        },
    }
    docs = [
        labelled(namespace("default"), **{USE: "waypoint"}),
        namespace("infra"),
        waypoint_gateway(),
        waypoint_pod("10.0.0.50", "n2"),
        infra_wp,
        pod("wp2", "10.0.0.60", "n2", "wp2", ns="infra"),
        pod("a", "10.0.0.1", "n1", "a"),
        labelled(
            pod("b", "10.0.0.2", "n1", "b"),
            **{USE: "wp2", "istio.io/use-waypoint-namespace": "infra"},
        ),
        service("a", "10.96.0.1", 80, 8080),
        labelled(service("b", "10.96.0.2", 80, 8080), **{USE: "none"}),
        labelled(service("c", "10.96.0.3", 80, 8080), **{USE: "nope"}),
        service("waypoint", "10.96.0.4", 15008, 15008),
    ]
    with caplog.at_level(logging.WARNING):
        state = parse_mesh(docs)
    a, b, c = (state.service(n, "default") for n in "abc")
    assert a is not None and a.waypoint is not None  # from the namespace label
    assert a.waypoint.key == "default/waypoint" and a.waypoint.serves_services
    assert [w.ip for w in a.waypoint.instances] == ["10.0.0.50"]
    assert b is not None and b.waypoint is None  # "none" opts out of the namespace's waypoint
    assert c is not None and c.waypoint is None  # names nothing: direct, with a warning
    assert "names default/nope, which is no waypoint Gateway or Service" in caplog.text
    own = state.service("waypoint", "default")
    assert own is not None and own.waypoint is None  # the waypoint's own Service
    pod_a, pod_b = state.workload_by_ip("10.0.0.1"), state.workload_by_ip("10.0.0.2")
    assert pod_a is not None and pod_a.waypoint is None  # default/waypoint serves services only
    assert pod_b is not None and pod_b.waypoint is not None
    assert pod_b.waypoint.key == "infra/wp2" and pod_b.waypoint.serves_workloads
    assert [w.ip for w in pod_b.waypoint.instances] == ["10.0.0.60"]
    wp = state.workload_by_ip("10.0.0.50")
    assert wp is not None and not wp.enrolled and wp.waypoint is None


def test_bad_waypoint_for_is_a_config_error() -> None:
    docs = [
        namespace("default"),
        waypoint_gateway(**{"istio.io/waypoint-for": "everything"}),
        labelled(service("a", "10.96.0.1", 80, 8080), **{USE: "waypoint"}),
    ]
    with pytest.raises(ConfigError, match=r"Gateway default/waypoint: .*waypoint-for.*everything"):
        parse_mesh(docs)


def route_docs() -> list[dict[str, Any]]:
    return [
        namespace("default"),
        waypoint_gateway(**{"istio.io/waypoint-for": "all"}),
        waypoint_pod(WAYPOINT_IP, "node-b"),
        pod("sleep", CLIENT_IP, "node-a", "sleep"),
        labelled(pod("echo", SERVER_IP, "node-b", "echo"), **{USE: "waypoint"}),
        labelled(service("echo", SERVICE_VIP, 80, 8080), **{USE: "waypoint"}),
        labelled(service("lonely", "10.96.0.20", 80, 8080), **{USE: "ghost"}),
        waypoint_gateway("ghost"),
    ]


def test_outbound_routes_through_waypoints() -> None:
    state = parse_mesh(route_docs())
    out = Outbound("node-a", lambda: state, None, TcpMetrics())  # type: ignore[arg-type]
    sleep, waypoint = state.workload_by_ip(CLIENT_IP), state.workload_by_ip(WAYPOINT_IP)
    via = out.resolve(SERVICE_VIP, 80, sleep)
    # HBONE to the waypoint instance; :authority stays the original VIP:port
    assert via.address == (SERVICE_VIP, 80) and via.hbone
    assert via.destination is waypoint and via.waypoint is not None
    assert via.destination is not None and via.destination.identity == WAYPOINT
    explicit = out.resolve_service(Forward(0, "echo", "default", 80), sleep)
    assert (explicit.address, explicit.destination) == ((SERVICE_VIP, 80), waypoint)
    # Pod-addressed traffic uses the Pod's workload waypoint; authority = pod IP:port
    to_pod = out.resolve(SERVER_IP, 8080, sleep)
    assert (to_pod.address, to_pod.destination, to_pod.service) == (
        (SERVER_IP, 8080),
        waypoint,
        None,
    )
    # the waypoint's own traffic, or a source without identity, goes to the endpoint
    for source in (waypoint, None):
        direct = out.resolve(SERVICE_VIP, 80, source)
        assert direct.address == (SERVER_IP, 8080) and direct.waypoint is None
    with pytest.raises(MeshError, match="waypoint default/ghost has no instances"):
        out.resolve("10.96.0.20", 80, sleep)


def waypoint_docs(echo_port: int) -> list[dict[str, Any]]:
    """base_docs, with Service echo behind a waypoint and echo-direct (same pod) without."""
    docs = base_docs(echo_port)
    echo = labelled(docs[3], **{USE: "waypoint"})
    direct = {
        **service("echo-direct", DIRECT_VIP, 80, echo_port),
        "spec": {**echo["spec"], "clusterIP": DIRECT_VIP},
    }
    return [*docs[:3], echo, direct, waypoint_gateway(), waypoint_pod(WAYPOINT_IP, "node-b")]


async def test_service_traffic_goes_through_its_waypoint_and_other_traffic_direct(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = await cluster_factory(waypoint_docs)

    def resolve(host: str, port: int) -> tuple[str, int, SpiffeId]:
        assert (host, port) == (SERVICE_VIP, 80)
        return SERVER_IP, cluster.echo_port, ECHO

    waypoint = StandInWaypoint(creds_for(cluster, WAYPOINT), resolve, cluster.hbone_port)
    await waypoint.start(WAYPOINT_IP)
    try:
        reader, writer = await cluster.open()  # forward listener for echo.default:80
        assert await roundtrip(reader, writer, b"via the waypoint") == b"via the waypoint"
        writer.close()
        (connect,) = waypoint.seen
        assert connect.authority == f"{SERVICE_VIP}:80"  # the original VIP, not the pod
        assert connect.client == SLEEP  # the source workload's SVID, end to end
        assert connect.headers["forwarded"].startswith('for="127.0.0.1:')
        assert connect.headers["forwarded"].endswith(";host=echo.default.svc.cluster.local")
        assert "k8s.pod.name=sleep" in connect.headers["baggage"]
        assert connect.headers["traceparent"].startswith("00-")

        za = cluster.ztunnels["node-a"]
        fwd = Forward(0, "echo-direct", "default", 80)
        direct_port = await za.outbound.listen_forward(fwd, za.forward_source)
        reader, writer = await asyncio.open_connection("127.0.0.1", direct_port)
        assert await roundtrip(reader, writer, b"direct") == b"direct"
        writer.close()
        assert len(waypoint.seen) == 1, "a service without use-waypoint does not use it"

        zb = cluster.ztunnels["node-b"]
        inbound = {"reporter": "destination", "destination_workload": "echo"}
        opened = "istio_tcp_connections_opened_total"
        assert sample(zb.metrics, opened, inbound | {"source_principal": WAYPOINT.uri}) == 1
        assert sample(zb.metrics, opened, inbound | {"source_principal": SLEEP.uri}) == 1
        assert cluster.echo.connections == 2
    finally:
        await waypoint.close()
