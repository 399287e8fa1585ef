"""The whole mesh in a cluster, in processes: ``ambient ca --kubeconfig``, two ``ambient ztunnel
--kubeconfig`` and the waypoint, ``ambient gateway --kubeconfig --node node-a --waypoint``, which
authenticates to the CA with its own ServiceAccount token. Everything is read from
tests/fixtures/kube_api.py (a stand-in for kube-apiserver, none can run here).

sleep (node-a) calls Service echo, labelled istio.io/use-waypoint: node-a's ztunnel sends it over
HBONE to the waypoint (on node-a), whose GAMMA route adds a header and sends it over HBONE to the
echo Pod on node-b."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.fixtures.cluster_mesh import ClusterMesh
from tests.fixtures.kube_api import KubeApiServer, kube_api, kubeconfig  # noqa: F401
from tests.fixtures.waypoint_mesh import free_port
from tests.mesh.conftest import namespace, pod
from tests.mesh.test_cluster_hbone import DEPLOY, endpoint_slice

CLIENT_IP = "127.0.31.11"
SERVER_IP = "127.0.31.12"
WAYPOINT_IP = "127.0.31.14"
WAYPOINT_LABELS = {
    "gateway.networking.k8s.io/gateway-name": "waypoint",
    "istio.io/dataplane-mode": "none",
}


def objects(echo_port: int) -> list[dict[str, Any]]:
    """The Pods, Services (echo through the waypoint, echo-pods straight), the waypoint Gateway
    and its class, and the route on Service echo."""

    def svc(name: str, vip: str, **labels: str) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {
                "clusterIP": vip,
                "selector": {"app": "echo"},
                "ports": [{"name": "tcp", "port": 80, "targetPort": echo_port}],
            },
        }

    slices = []
    for name in ("echo", "echo-pods"):
        s = endpoint_slice(echo_port, [SERVER_IP])
        s["metadata"]["name"] = f"{name}-abcde"
        s["metadata"]["labels"]["kubernetes.io/service-name"] = name
        slices.append(s)
    return [
        namespace("default"),
        pod("sleep", CLIENT_IP, "node-a", "sleep"),
        pod("echo", SERVER_IP, "node-b", "echo"),
        pod("waypoint-0", WAYPOINT_IP, "node-a", "waypoint", **WAYPOINT_LABELS),
        svc("echo", "10.96.31.10", **{"istio.io/use-waypoint": "waypoint"}),
        svc("echo-pods", "10.96.31.11"),
        *slices,
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "istio-waypoint"},
            "spec": {"controllerName": "ambient.dev/gateway-controller"},
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {
                "name": "waypoint",
                "namespace": "default",
                "labels": {"istio.io/waypoint-for": "service"},
            },
            "spec": {
                "gatewayClassName": "istio-waypoint",
                "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
                "rules": [
                    {
                        "filters": [
                            {
                                "type": "RequestHeaderModifier",
                                "requestHeaderModifier": {
                                    "set": [{"name": "x-via-waypoint", "value": "default/waypoint"}]
                                },
                            }
                        ],
                        "backendRefs": [{"name": "echo-pods", "port": 80}],
                    }
                ],
            },
        },
    ]


@pytest.fixture
async def mesh(
    tmp_path: Path,
    kube_api: KubeApiServer,  # noqa: F811
    kubeconfig: str,  # noqa: F811
) -> AsyncIterator[tuple[ClusterMesh, int]]:
    """CA, ztunnels, echo and the waypoint running; node-a's forward port for echo.default:80."""
    for crd in yaml.safe_load_all((DEPLOY / "crds" / "security.istio.io.yaml").read_text()):
        kube_api.apply(crd)
    echo_port = free_port(SERVER_IP)
    kube_api.apply_many(objects(echo_port))
    kube_api.tokens["projected-waypoint"] = {"username": "system:serviceaccount:default:waypoint"}
    token = tmp_path / "waypoint.token"
    token.write_text("projected-waypoint\n")
    forward, admin = free_port(), free_port()
    cluster = ClusterMesh(tmp_path, kube_api, kubeconfig)
    try:
        cluster.spawn_echo(SERVER_IP, echo_port)
        flags = ["--forward", f"{forward}=echo.default:80", "--forward-as", "default/sleep"]
        await cluster.start(CLIENT_IP, {"node-a": flags})
        cluster.spawn_gateway(
            "waypoint",
            "gateway", "--kubeconfig", kubeconfig, "--lease-namespace", "default",
            "--node", "node-a", "--waypoint", "default/waypoint",
            "--ca", f"127.0.0.1:{cluster.ca_port}", "--ca-root", "ca/root-cert.pem",
            "--token-file", str(token), "--hbone-port", str(cluster.hbone_port),
            "--admin", f"127.0.0.1:{admin}",
        )  # fmt: skip
        await cluster.wait_ready(f"http://127.0.0.1:{admin}/healthz/ready")
        yield cluster, forward
    finally:
        cluster.stop()


async def test_a_cluster_waypoint_carries_service_traffic_between_cluster_ztunnels(
    mesh: tuple[ClusterMesh, int],
) -> None:
    cluster, forward = mesh
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(f"http://127.0.0.1:{forward}/hello")
    assert response.status_code == 200, cluster.output()
    assert response.json()["headers"]["x-via-waypoint"] == "default/waypoint"
    # node-b's ztunnel saw the waypoint's identity, not the client's, on the second hop.
    inbound = await asyncio.to_thread(cluster.get, "node-b", "metrics", "/metrics")
    assert 'source_principal="spiffe://cluster.local/ns/default/sa/waypoint"' in inbound, inbound
