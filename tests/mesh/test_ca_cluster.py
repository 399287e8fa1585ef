"""``ambient ca`` in a cluster: Pods from the Kubernetes API, ztunnels authenticated by their
ServiceAccount token through a TokenReview, certificates only for Pods on the token's node; any
other workload's ServiceAccount token obtains its own identity and nothing else.

tests/fixtures/kube_api.py stands in for kube-apiserver (none can run here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kubernetes import client

from mesh.ca.client import CAClient, RpcError
from mesh.ca.root_publisher import ROOT_CONFIG_MAP, ROOT_KEY
from mesh.ca.server import CAOptions, CertificateAuthority
from mesh.errors import CAError
from mesh.identity import SpiffeId, certs
from mesh.identity.spiffe import NodeId
from mesh.state.cluster import ClusterMeshWatcher
from tests.fixtures.cluster_objects import eventually
from tests.fixtures.kube_api import KubeApiServer, kube, kube_api, kubeconfig  # noqa: F401
from tests.mesh.conftest import namespace, pod

SLEEP = SpiffeId("cluster.local", "default", "sleep")
ECHO = SpiffeId("cluster.local", "default", "echo")
ZTUNNEL = "system:serviceaccount:ambient-system:ztunnel"
NODE_CLAIM = "authentication.kubernetes.io/node-name"


@pytest.fixture
async def cluster_ca(
    tmp_path: Path,
    kube_api: KubeApiServer,  # noqa: F811
    kubeconfig: str,  # noqa: F811
) -> AsyncIterator[CertificateAuthority]:
    for obj in (
        namespace("default"),
        pod("sleep", "10.0.0.1", "node-a", "sleep"),
        pod("echo", "10.0.0.2", "node-b", "echo"),
    ):
        kube_api.apply(obj)
    kube_api.tokens["node-a-token"] = {"username": ZTUNNEL, "extra": {NODE_CLAIM: ["node-a"]}}
    kube_api.tokens["sleep-sa"] = {
        "username": "system:serviceaccount:default:sleep",
        "extra": {NODE_CLAIM: ["node-a"]},
    }
    kube_api.tokens["no-node"] = {"username": ZTUNNEL}
    kube_api.tokens["a-user"] = {"username": "jane@example.com"}
    ca = CertificateAuthority(
        CAOptions(
            state_dir=tmp_path / "ca", listen="127.0.0.1:0", cluster=True, kubeconfig=kubeconfig
        )
    )
    server = await ca.start()
    yield ca
    await ca.stop(server)


def _client(tmp_path: Path, ca: CertificateAuthority, token: str) -> CAClient:
    root = (tmp_path / "ca" / "root-cert.pem").read_bytes()
    return CAClient(f"127.0.0.1:{ca.port}", root, token)


async def test_a_ztunnel_token_gets_certificates_for_its_nodes_pods_only(
    tmp_path: Path,
    cluster_ca: CertificateAuthority,
    kube_api: KubeApiServer,  # noqa: F811
) -> None:
    client = _client(tmp_path, cluster_ca, "node-a-token")
    issued = await client.issue(SLEEP, ttl_seconds=3600)
    assert certs.svid_identity(issued.leaf) == SLEEP
    assert cluster_ca.authentications["token-review"] == 1
    with pytest.raises(CAError, match=r"PERMISSION_DENIED.*node-a runs no Pod"):
        await client.issue(ECHO)

    # A Pod scheduled on node-a later: the CA follows the API and now allows it.
    kube_api.apply(pod("echo-2", "10.0.0.3", "node-a", "echo"))
    watcher = cluster_ca.watcher
    assert watcher is not None
    await eventually(
        lambda: any(w.name == "echo-2" for w in cluster_ca.state.workloads), what="the new Pod"
    )
    assert certs.svid_identity((await client.issue(ECHO)).leaf) == ECHO
    await client.close()


async def test_a_workload_token_gets_its_own_identity_and_nothing_else(
    tmp_path: Path, cluster_ca: CertificateAuthority
) -> None:
    # sleep's token names node-a too: the node claim counts only for a ztunnel's token.
    client = _client(tmp_path, cluster_ca, "sleep-sa")
    issued = await client.issue(SLEEP, ttl_seconds=3600)
    assert certs.svid_identity(issued.leaf) == SLEEP
    assert cluster_ca.authentications["workload-token"] == 1
    assert cluster_ca.authentications["token-review"] == 0
    mismatch = (
        r"PERMISSION_DENIED: the token of service account default/sleep obtains only its own "
        r"identity spiffe://cluster.local/ns/default/sa/sleep, not "
    )
    with pytest.raises(CAError, match=mismatch + "spiffe://cluster.local/ns/default/sa/echo") as e:
        await client.issue(ECHO)
    assert isinstance(e.value.__cause__, RpcError) and e.value.__cause__.code == 7
    with pytest.raises(CAError, match=mismatch + "spiffe://cluster.local/ztunnel/node/node-a"):
        await client.issue(NodeId("cluster.local", "node-a"))
    assert await client.trust_bundle() == tuple(cluster_ca.roots())
    await client.close()


@pytest.mark.parametrize("token", ["no-node", "a-user", "unknown"])
async def test_a_ztunnel_token_without_a_node_a_user_or_unknown_is_unauthenticated(
    tmp_path: Path, cluster_ca: CertificateAuthority, token: str
) -> None:
    client = _client(tmp_path, cluster_ca, token)
    with pytest.raises(CAError, match="UNAUTHENTICATED"):
        await client.issue(SLEEP)
    await client.close()


async def test_the_root_is_published_to_every_namespace_and_kept_right(
    tmp_path: Path,
    cluster_ca: CertificateAuthority,
    kube_api: KubeApiServer,  # noqa: F811
) -> None:
    root = (tmp_path / "ca" / "root-cert.pem").read_text()

    def published(ns: str) -> str | None:
        found = kube_api.get("", "configmaps", ns, ROOT_CONFIG_MAP) or {}
        return (found.get("data") or {}).get(ROOT_KEY)

    assert published("default") == root  # before start returned: a ztunnel can mount it
    kube_api.apply(namespace("apps"))
    await eventually(lambda: published("apps") == root, what="the root in a new namespace")
    # A namespace holding a stale copy (an old root, created by hand) when it appears.
    kube_api.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": ROOT_CONFIG_MAP, "namespace": "ambient-system"},
            "data": {ROOT_KEY: "stale", "extra": "kept"},
        }
    )
    kube_api.apply(namespace("ambient-system"))
    await eventually(lambda: published("ambient-system") == root, what="a stale root corrected")
    kept = kube_api.get("", "configmaps", "ambient-system", ROOT_CONFIG_MAP) or {}
    assert kept["data"]["extra"] == "kept"


async def test_a_root_config_map_edited_or_deleted_after_publishing_is_written_again(
    tmp_path: Path,
    cluster_ca: CertificateAuthority,
    kube_api: KubeApiServer,  # noqa: F811
    kube: client.ApiClient,  # noqa: F811
) -> None:
    root = (tmp_path / "ca" / "root-cert.pem").read_text()

    def published() -> dict[str, str]:
        found = kube_api.get("", "configmaps", "default", ROOT_CONFIG_MAP) or {}
        return dict(found.get("data") or {})

    assert published() == {ROOT_KEY: root}
    # Someone replaces the root in it (and adds a key of their own).
    kube_api.apply(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": ROOT_CONFIG_MAP, "namespace": "default"},
            "data": {ROOT_KEY: "edited", "extra": "kept"},
        }
    )
    await eventually(lambda: published() == {ROOT_KEY: root, "extra": "kept"}, what="repaired")
    # Someone deletes it.
    core = client.CoreV1Api(kube)
    await asyncio.to_thread(
        lambda: core.delete_namespaced_config_map(
            ROOT_CONFIG_MAP, "default", _preload_content=False
        )
    )
    await eventually(lambda: published() == {ROOT_KEY: root}, what="written again")
    # It watched only ConfigMaps of that name (what its RBAC, by resource name, allows).
    selected = [p for _, p in kube_api.requests if p.startswith("/api/v1/configmaps")]
    assert selected and all(
        f"fieldSelector=metadata.name%3D{ROOT_CONFIG_MAP}" in p for p in selected
    )


async def test_pods_that_are_not_workloads_do_not_stop_the_ca_following_the_api(
    tmp_path: Path,
    cluster_ca: CertificateAuthority,
    kube_api: KubeApiServer,  # noqa: F811
) -> None:
    """What every cluster has: Pods on the node's network sharing its IP (kube-proxy, the
    ztunnels), a Pod still pending without an IP, a finished Job Pod whose IP is reused."""
    for name in ("kube-proxy", "ztunnel"):
        host = pod(name, "192.168.0.10", "node-a", name)
        host["spec"]["hostNetwork"] = True
        kube_api.apply(host)
    pending = pod("starting", "", "node-a", "sleep")
    pending["status"] = {"phase": "Pending"}
    finished = pod("job", "10.0.0.1", "node-a", "job")  # sleep's IP
    finished["status"]["phase"] = "Succeeded"
    kube_api.apply_many([pending, finished, pod("echo-2", "10.0.0.3", "node-a", "echo")])
    await eventually(
        lambda: any(w.name == "echo-2" for w in cluster_ca.state.workloads), what="echo-2"
    )
    assert {w.name for w in cluster_ca.state.workloads} == {"sleep", "echo", "echo-2"}
    client = _client(tmp_path, cluster_ca, "node-a-token")
    assert certs.svid_identity((await client.issue(ECHO)).leaf) == ECHO
    await client.close()


async def test_a_pod_that_gets_its_ip_by_a_status_write_gets_its_certificate(
    tmp_path: Path,
    cluster_ca: CertificateAuthority,
    kube_api: KubeApiServer,  # noqa: F811
    kube: client.ApiClient,  # noqa: F811
) -> None:
    """A Pod is created without an IP; the kubelet writes it to the status subresource."""
    watcher = cluster_ca.watcher
    assert isinstance(watcher, ClusterMeshWatcher)
    rebuilds = watcher.rebuilds
    created = pod("late", "", "node-a", "late")
    created["status"] = {"phase": "Pending"}
    kube_api.apply(created)
    await eventually(
        lambda: watcher.rebuilds > rebuilds and watcher.cache.get("", "Pod", "default", "late"),
        what="the pending Pod seen",
    )
    status = {"status": {"phase": "Running", "podIP": "10.0.0.9"}}
    core = client.CoreV1Api(kube)
    await asyncio.to_thread(
        lambda: core.patch_namespaced_pod_status("late", "default", status, _preload_content=False)
    )
    await eventually(lambda: cluster_ca.state.workload_by_ip("10.0.0.9") is not None, what="IP")
    late = SpiffeId("cluster.local", "default", "late")
    client_ = _client(tmp_path, cluster_ca, "node-a-token")
    assert certs.svid_identity((await client_.issue(late)).leaf) == late
    await client_.close()


async def test_a_rotated_projected_token_is_read_again_from_its_file(
    tmp_path: Path,
    cluster_ca: CertificateAuthority,
    kube_api: KubeApiServer,  # noqa: F811
) -> None:
    """The kubelet replaces a projected token in place before it expires; a client reading the
    file once would go on sending the expired one."""
    kube_api.tokens["sleep-new"] = kube_api.tokens["sleep-sa"]
    token = tmp_path / "token"
    token.write_text("sleep-sa\n")
    client_ = CAClient.from_files(
        f"127.0.0.1:{cluster_ca.port}", tmp_path / "ca" / "root-cert.pem", token
    )
    await client_.issue(SLEEP)
    del kube_api.tokens["sleep-sa"]  # expired
    token.write_text("sleep-new\n")
    assert certs.svid_identity((await client_.issue(SLEEP)).leaf) == SLEEP
    assert cluster_ca.authentications["workload-token"] == 2
    await client_.close()
