"""A waypoint in a cluster gets its certificate with its own ServiceAccount token: ``ambient
gateway --kubeconfig --node --waypoint`` as a process, deploy/examples/waypoint.yaml applied to
tests/fixtures/kube_api.py (a stand-in for kube-apiserver, none can run here), and ``ambient
ca`` in cluster mode checking the token by TokenReview. The CA knows only the ztunnel account
as a node's agent, so the waypoint's token obtains the waypoint's identity and nothing else."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from mesh.ca.server import CAOptions, CertificateAuthority
from mesh.hbone.tls import Credentials, client_context, peer_identity
from mesh.identity import SpiffeId, certs
from tests.cluster.test_waypoint_example import DEPLOY, scheduled
from tests.fixtures.cluster_mesh import NODE_CLAIM, ClusterMesh
from tests.fixtures.kube_api import KubeApiServer
from tests.fixtures.waypoint_mesh import free_port

WAYPOINT_IP = "127.0.60.24"
WAYPOINT = SpiffeId("cluster.local", "demo", "waypoint")
CALLER = SpiffeId("cluster.local", "demo", "curl")


@pytest.fixture
async def cluster_ca(
    tmp_path: Path,
    kube_api: KubeApiServer,
    kubeconfig: str,
) -> AsyncIterator[CertificateAuthority]:
    """``ambient ca`` in cluster mode (in this process), over deploy/examples/waypoint.yaml with
    the waypoint's Pod on node-a."""
    for crd in yaml.safe_load_all((DEPLOY / "crds" / "security.istio.io.yaml").read_text()):
        kube_api.apply(crd)
    docs = list(yaml.safe_load_all((DEPLOY / "examples" / "waypoint.yaml").read_text()))
    kube_api.apply_many(docs)
    (deployment,) = [
        d for d in docs if (d["kind"], d["metadata"]["name"]) == ("Deployment", "waypoint")
    ]
    kube_api.apply(scheduled(deployment, "node-a", WAYPOINT_IP))
    ca = CertificateAuthority(
        CAOptions(
            state_dir=tmp_path / "ca", listen="127.0.0.1:0", cluster=True, kubeconfig=kubeconfig
        )
    )
    server = await ca.start()
    yield ca
    await ca.stop(server)


async def waypoint_certificate(ca: CertificateAuthority, port: int) -> SpiffeId:
    """The identity the waypoint presents on HBONE to a mesh client."""
    key = certs.generate_key()
    leaf = certs.issue_svid(CALLER, key.public_key(), ca.material.signer)
    creds = Credentials(certs.key_to_pem(key), (certs.cert_to_pem(leaf),), tuple(ca.roots()))
    ctx: ssl.SSLContext = client_context(creds)
    _, writer = await asyncio.open_connection(WAYPOINT_IP, port, ssl=ctx, server_hostname=None)
    try:
        return peer_identity(writer.get_extra_info("ssl_object"))
    finally:
        writer.close()


async def test_a_cluster_waypoint_gets_its_own_identity_with_its_own_token(
    tmp_path: Path,
    kube_api: KubeApiServer,
    kubeconfig: str,
    cluster_ca: CertificateAuthority,
) -> None:
    # A projected token of the waypoint's Pod: it names the node too, which gives it nothing.
    kube_api.tokens["projected-waypoint"] = {
        "username": "system:serviceaccount:demo:waypoint",
        "extra": {NODE_CLAIM: ["node-a"]},
    }
    token = tmp_path / "waypoint.token"
    token.write_text("projected-waypoint\n")
    hbone, admin = free_port(WAYPOINT_IP), free_port()
    process = ClusterMesh(tmp_path, kube_api, kubeconfig)
    try:
        process.spawn_gateway(
            "waypoint",
            "gateway", "--kubeconfig", kubeconfig, "--lease-namespace", "default",
            "--node", "node-a", "--waypoint", "demo/waypoint",
            "--ca", f"127.0.0.1:{cluster_ca.port}", "--ca-root", "ca/root-cert.pem",
            "--token-file", str(token), "--hbone-port", str(hbone),
            "--admin", f"127.0.0.1:{admin}",
        )  # fmt: skip
        await process.wait_ready(f"http://127.0.0.1:{admin}/healthz/ready")
        assert await waypoint_certificate(cluster_ca, hbone) == WAYPOINT
        assert cluster_ca.authentications["workload-token"] >= 1
        assert cluster_ca.authentications["token-review"] == 0  # not as node-a's agent
    finally:
        process.stop()
