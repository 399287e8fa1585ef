"""deploy/examples/waypoint.yaml as a cluster-mode gateway reads it: the waypoint Gateway is
served (its class names our controller) and the waypoint Pod on this node is the instance
``ambient gateway --in-cluster --node`` serves as. The API server is tests/fixtures/kube_api.py's
double (a stand-in for kube-apiserver); no kubelet runs, so the test writes the Pod the
Deployment would make. Certificates are not asked for (the mesh tests cover the CA)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from gateway.waypoint.runtime import WaypointOptions, WaypointRuntime
from mesh.identity.spiffe import SpiffeId
from mesh.ztunnel.certs import IssuedCertificate
from tests.cluster.conftest import ClusterGateway
from tests.fixtures.kube_api import KubeApiServer

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


class NoIssuer:
    """The CA is not part of this test."""

    async def issue(
        self, identity: SpiffeId, ttl_seconds: int = 0, timeout: float = 10.0
    ) -> IssuedCertificate:
        raise AssertionError(f"no certificate expected here (asked for {identity})")


def scheduled(deployment: dict[str, Any], node: str, ip: str) -> dict[str, Any]:
    """The Pod a Deployment makes, as it is once scheduled on ``node`` and running."""
    template = deployment["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{deployment['metadata']['name']}-0",
            "namespace": deployment["metadata"]["namespace"],
            "labels": template["metadata"]["labels"],
        },
        "spec": {"serviceAccountName": template["spec"]["serviceAccountName"], "nodeName": node},
        "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]},
    }


async def test_a_cluster_gateway_finds_the_example_waypoint_instance_on_its_node(
    kube_api: KubeApiServer, cluster_gateway: ClusterGateway
) -> None:
    for crd in yaml.safe_load_all((DEPLOY / "crds" / "security.istio.io.yaml").read_text()):
        kube_api.apply(crd)
    docs = list(yaml.safe_load_all((DEPLOY / "examples" / "waypoint.yaml").read_text()))
    for doc in docs:
        kube_api.apply(doc)
    (deployment,) = [
        d for d in docs if (d["kind"], d["metadata"]["name"]) == ("Deployment", "waypoint")
    ]
    kube_api.apply(scheduled(deployment, "node-a", "127.0.60.14"))

    process = await cluster_gateway()
    options = WaypointOptions(node="node-a", waypoint="demo/waypoint")
    runtime = WaypointRuntime(options, process.listeners, issuer=NoIssuer())
    assert runtime.address() == "127.0.60.14"
    assert runtime.identity() == SpiffeId("cluster.local", "demo", "waypoint")
    mesh = process.holder.current.mesh
    assert mesh is not None
    (echo,) = [s for s in mesh.state.services if s.name == "echo"]
    assert echo.waypoint is not None and echo.waypoint.name == "waypoint"
