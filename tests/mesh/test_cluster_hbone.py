"""Two cluster-mode ztunnels carrying HBONE to each other: ``ambient ca --kubeconfig`` and
``ambient ztunnel --kubeconfig --node node-a|node-b`` as processes, everything they know read
from tests/fixtures/kube_api.py (a stand-in for kube-apiserver, none can run here).

A client on node-a (explicit mode, ``--forward`` as the Pod ``sleep``) reaches Service ``echo``,
whose Pod runs on node-b, over HBONE mTLS; AuthorizationPolicies and a deleted Pod take effect
through the API without a restart."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from tests.fixtures.cluster_mesh import ClusterMesh
from tests.fixtures.kube_api import KubeApiServer, kube, kube_api, kubeconfig  # noqa: F401
from tests.fixtures.waypoint_mesh import free_port
from tests.mesh.conftest import namespace, pod, policy
from tests.mesh.echo import Echo

CLIENT_IP = "127.0.30.11"
SERVER_IP = "127.0.30.12"
ECHO_VIP = "10.96.30.10"
SLEEP = "spiffe://cluster.local/ns/default/sa/sleep"
ECHO = "spiffe://cluster.local/ns/default/sa/echo"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def echo_service(port: int) -> list[dict[str, Any]]:
    """Service echo:80 and the EndpointSlice the endpoints controller would write for it."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {
                "clusterIP": ECHO_VIP,
                "selector": {"app": "echo"},
                "ports": [{"name": "tcp", "port": 80, "targetPort": port}],
            },
        },
        endpoint_slice(port, [SERVER_IP]),
    ]


def endpoint_slice(port: int, addresses: list[str]) -> dict[str, Any]:
    """The EndpointSlice of Service echo listing ``addresses`` (on node-b)."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": "echo-abcde",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": "echo"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "tcp", "port": port, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": [ip], "conditions": {"ready": True}, "nodeName": "node-b"}
            for ip in addresses
        ],
    }


@pytest.fixture
async def mesh(
    tmp_path: Path,
    kube_api: KubeApiServer,  # noqa: F811
    kubeconfig: str,  # noqa: F811
) -> AsyncIterator[tuple[ClusterMesh, Echo, int]]:
    """The CA and both ztunnels running, the echo server on its Pod IP, and node-a's forward
    listener port for echo.default:80."""
    for crd in yaml.safe_load_all((DEPLOY / "crds" / "security.istio.io.yaml").read_text()):
        kube_api.apply(crd)
    echo = Echo()
    echo_port = await echo.start(SERVER_IP)
    kube_api.apply_many(
        [
            namespace("default"),
            pod("sleep", CLIENT_IP, "node-a", "sleep"),
            pod("echo", SERVER_IP, "node-b", "echo"),
            *echo_service(echo_port),
        ]
    )
    forward = free_port()
    mesh = ClusterMesh(tmp_path, kube_api, kubeconfig)
    try:
        client_flags = ["--forward", f"{forward}=echo.default:80", "--forward-as", "default/sleep"]
        await mesh.start(CLIENT_IP, {"node-a": client_flags})
        yield mesh, echo, forward
    finally:
        mesh.stop()
        await echo.close()


async def exchange(port: int, payload: bytes = b"hello over hbone") -> bytes:
    """Send ``payload`` through node-a's forward listener; what comes back (b"" if refused)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.read(len(payload)), 5)
    except ConnectionError:
        return b""
    finally:
        writer.close()


async def hbone_listening(port: int) -> bool:
    """Whether a ztunnel accepts connections on the echo Pod's HBONE address."""
    try:
        _, writer = await asyncio.open_connection(SERVER_IP, port)
    except OSError:
        return False
    writer.close()
    return True


def series(text: str, **labels: str) -> float:
    """Sum of ``istio_tcp_connections_opened_total`` samples with all of ``labels``."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith("istio_tcp_connections_opened_total{") and all(
            f'{k}="{v}"' in line for k, v in labels.items()
        ):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_two_cluster_ztunnels_carry_hbone_authorize_by_identity_and_follow_the_api(
    mesh: tuple[ClusterMesh, Echo, int],
    kube: client.ApiClient,  # noqa: F811
    kube_api: KubeApiServer,  # noqa: F811
) -> None:
    cluster, echo, forward = mesh
    payload = b"hello over hbone"
    assert await exchange(forward, payload) == payload
    assert echo.connections == 1
    # node-b's inbound saw node-a's mTLS client certificate of sleep and served as echo.
    inbound = cluster.get("node-b", "metrics", "/metrics")
    assert series(
        inbound,
        reporter="destination",
        source_principal=SLEEP,
        destination_principal=ECHO,
        connection_security_policy="mutual_tls",
    ), inbound
    outbound = cluster.get("node-a", "metrics", "/metrics")
    assert series(outbound, reporter="source", destination_principal=ECHO), outbound

    # An ALLOW policy naming another identity: sleep is now refused, by node-b, no restart.
    only_other = policy(
        "echo-callers",
        "ALLOW",
        [{"from": [{"source": {"principals": ["cluster.local/ns/default/sa/other"]}}]}],
        selector={"matchLabels": {"app": "echo"}},
    )
    kube_api.apply(only_other)

    async def refused() -> bool:
        return await exchange(forward, payload) == b""

    await cluster.wait(refused, "sleep denied by the ALLOW policy for other")
    denied = cluster.get("node-b", "metrics", "/metrics")
    assert re.search(r'source_principal="[^"]*sa/sleep".*response_flags="DENY"', denied), denied

    # The policy edited to name sleep: allowed again.
    only_other["spec"]["rules"][0]["from"][0]["source"]["principals"] = [SLEEP[len("spiffe://") :]]
    kube_api.apply(only_other)

    async def served() -> bool:
        return await exchange(forward, payload) == payload

    await cluster.wait(served, "sleep allowed by the edited policy")

    # The echo Pod deleted (and its endpoint dropped, as the endpoints controller does): node-b
    # stops serving HBONE on its IP and the client is refused.
    core = client.CoreV1Api(kube)
    await asyncio.to_thread(
        lambda: core.delete_namespaced_pod("echo", "default", _preload_content=False)
    )
    kube_api.apply(endpoint_slice(0, []))

    async def gone() -> bool:
        return not await hbone_listening(cluster.hbone_port)

    await cluster.wait(gone, "node-b no longer listening on the deleted Pod's IP")
    assert await exchange(forward, payload) == b""
    dump = json.loads(cluster.get("node-b", "admin", "/config_dump"))
    assert [w["name"] for w in dump["workloads"] if w["node"] == "node-b"] == []
