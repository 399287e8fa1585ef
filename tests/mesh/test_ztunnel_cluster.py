"""``ambient ztunnel --kubeconfig``: the node's Pods from the Kubernetes API (every Pod is read,
the others are destinations), certificates from a cluster-mode CA that authenticates its
ServiceAccount token by TokenReview. tests/fixtures/kube_api.py stands in for kube-apiserver
(none can run here)."""

from __future__ import annotations

from pathlib import Path

from mesh.ca.server import CAOptions, CertificateAuthority
from mesh.state.cluster import ClusterMeshWatcher
from mesh.ztunnel.node import Ztunnel, ZtunnelOptions
from tests.fixtures.cluster_objects import eventually
from tests.fixtures.kube_api import KubeApiServer, kube, kube_api, kubeconfig  # noqa: F401
from tests.mesh.conftest import CLIENT_IP, OTHER_IP, SERVER_IP, free_port, namespace, pod

NODE_CLAIM = "authentication.kubernetes.io/node-name"


async def test_a_cluster_ztunnel_reads_its_nodes_pods_and_gets_their_certificates(
    tmp_path: Path,
    kube_api: KubeApiServer,  # noqa: F811
    kubeconfig: str,  # noqa: F811
) -> None:
    for obj in (
        namespace("default"),
        pod("sleep", CLIENT_IP, "node-a", "sleep"),
        pod("echo", SERVER_IP, "node-b", "echo"),
    ):
        kube_api.apply(obj)
    kube_api.tokens["projected"] = {
        "username": "system:serviceaccount:ambient-system:ztunnel",
        "extra": {NODE_CLAIM: ["node-a"]},
    }
    token_file = tmp_path / "token"
    token_file.write_text("projected\n")
    ca = CertificateAuthority(
        CAOptions(
            state_dir=tmp_path / "ca", listen="127.0.0.1:0", cluster=True, kubeconfig=kubeconfig
        )
    )
    server = await ca.start()
    hbone = free_port(CLIENT_IP)
    ztunnel = Ztunnel(
        ZtunnelOptions(
            node="node-a",
            mesh_file=None,
            cluster=True,
            kubeconfig=kubeconfig,
            ca_address=f"127.0.0.1:{ca.port}",
            ca_root=tmp_path / "ca" / "root-cert.pem",
            token_file=token_file,
            hbone_port=hbone,
            admin="127.0.0.1:0",
            metrics="127.0.0.1:0",
            ready="127.0.0.1:0",
        )
    )
    try:
        await ztunnel.start()
        await ztunnel.wait_ready()
        assert [w.name for w in ztunnel.local_workloads()] == ["sleep"]
        # The echo Pod on node-b is known as a destination (its identity, for HBONE to it),
        # but served and given a certificate only by node-b's ztunnel.
        assert {w.name for w in ztunnel.state().workloads} == {"sleep", "echo"}
        assert [c["identity"] for c in ztunnel.certs.dump()] == [
            "spiffe://cluster.local/ns/default/sa/sleep"
        ]
        watcher = ztunnel.watcher
        assert isinstance(watcher, ClusterMeshWatcher)
        (pods,) = [i.scope for i in watcher.informers if i.scope.resource.kind == "Pod"]
        assert pods.field_selector is None
        assert ca.authentications["token-review"] >= 1

        # A Pod scheduled on node-a later gets its certificate without a restart.
        kube_api.apply(pod("late", OTHER_IP, "node-a", "late"))
        await eventually(
            lambda: "late" in {w.name for w in ztunnel.local_workloads()}, what="the new Pod"
        )
        await ztunnel.wait_ready()
        assert ztunnel._pending() == []
    finally:
        await ztunnel.stop()
        await ca.stop(server)
