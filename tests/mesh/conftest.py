"""Fixtures for mesh tests: a running CA, mesh.yaml documents, two-node loopback clusters."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.ca.server import CAOptions, CertificateAuthority
from mesh.hbone.tls import Credentials
from mesh.identity import SpiffeId, certs
from mesh.ztunnel.node import Ztunnel, ZtunnelOptions
from mesh.ztunnel.outbound import Forward
from tests.mesh.echo import Echo

SLEEP = SpiffeId("cluster.local", "default", "sleep")
CLIENT_IP = "127.0.10.11"
SERVER_IP = "127.0.10.12"
OTHER_IP = "127.0.10.13"
SERVICE_VIP = "10.96.0.10"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on at ``host``."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def pod(
    name: str, ip: str, node: str, sa: str, ns: str = "default", **labels: str
) -> dict[str, Any]:
    """A Pod document."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name, **labels}},
        "spec": {"serviceAccountName": sa, "nodeName": node},
        "status": {"podIP": ip},
    }


def namespace(name: str, ambient: bool = True) -> dict[str, Any]:
    """A Namespace document, enrolled in ambient mode by default."""
    labels = {"istio.io/dataplane-mode": "ambient"} if ambient else {}
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


def service(name: str, vip: str, port: int, target: int, ns: str = "default") -> dict[str, Any]:
    """A Service document selecting ``app=<name>``."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "clusterIP": vip,
            "selector": {"app": name},
            "ports": [{"name": "tcp", "port": port, "targetPort": target}],
        },
    }


def policy(
    name: str, action: str, rules: list[Any], ns: str = "default", **spec: Any
) -> dict[str, Any]:
    """An AuthorizationPolicy document."""
    return {
        "apiVersion": "security.istio.io/v1",
        "kind": "AuthorizationPolicy",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"action": action, "rules": rules, **spec},
    }


@dataclass
class Cluster:
    """CA + ztunnels for node-a (client pod) and node-b (echo pod) on loopback."""

    directory: Path
    mesh_file: Path
    ca: CertificateAuthority
    echo: Echo
    echo_port: int
    hbone_port: int
    ztunnels: dict[str, Ztunnel] = field(default_factory=dict)
    docs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def forward_port(self) -> int:
        """The explicit-mode listener on node-a for echo.default:80."""
        return self.ztunnels["node-a"].ports.forwards[0]

    def write(self, docs: list[dict[str, Any]]) -> None:
        """Replace mesh.yaml."""
        self.docs = docs
        self.mesh_file.write_text(yaml.safe_dump_all(docs))

    async def reload(self, docs: list[dict[str, Any]]) -> None:
        """Replace mesh.yaml and apply it on every process now."""
        self.write(docs)
        for z in self.ztunnels.values():
            z.watcher.reload()
        if self.ca.watcher:
            self.ca.watcher.reload()
        await asyncio.sleep(0.05)

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A client connection through node-a's forward listener."""
        return await asyncio.open_connection("127.0.0.1", self.forward_port)


def base_docs(echo_port: int) -> list[dict[str, Any]]:
    """Client pod on node-a, echo pod + Service on node-b, all enrolled."""
    return [
        namespace("default"),
        pod("sleep", CLIENT_IP, "node-a", "sleep"),
        pod("echo", SERVER_IP, "node-b", "echo"),
        service("echo", SERVICE_VIP, 80, echo_port),
    ]


ClusterFactory = Callable[..., Awaitable[Cluster]]


@pytest.fixture
async def cluster_factory(tmp_path: Path) -> AsyncIterator[ClusterFactory]:
    """Start a CA and two ztunnels; options are passed to both ZtunnelOptions."""
    started: list[tuple[Cluster, Any]] = []

    async def start(
        docs: Callable[[int], list[dict[str, Any]]] = base_docs, **options: Any
    ) -> Cluster:
        echo = Echo()
        echo_port = await echo.start(SERVER_IP)
        mesh_file = tmp_path / "mesh.yaml"
        cluster = Cluster(tmp_path, mesh_file, None, echo, echo_port, free_port(SERVER_IP))  # type: ignore[arg-type]
        cluster.write(docs(echo_port))
        ca = CertificateAuthority(
            CAOptions(state_dir=tmp_path / "ca", listen="127.0.0.1:0", mesh_file=mesh_file)
        )
        server = await ca.start()
        cluster.ca = ca
        started.append((cluster, server))
        for node, forwards in (("node-a", (Forward(0, "echo", "default", 80),)), ("node-b", ())):
            z = Ztunnel(
                ZtunnelOptions(
                    node=node,
                    mesh_file=mesh_file,
                    ca_address=f"127.0.0.1:{ca.port}",
                    ca_root=tmp_path / "ca" / "root-cert.pem",
                    hbone_port=cluster.hbone_port,
                    forwards=forwards,
                    admin="127.0.0.1:0",
                    metrics="127.0.0.1:0",
                    ready="127.0.0.1:0",
                    reload_interval=0.2,
                    **options,
                )
            )
            await z.start()
            cluster.ztunnels[node] = z
        for z in cluster.ztunnels.values():
            await z.wait_ready()
        return cluster

    yield start
    for cluster, server in started:
        for z in cluster.ztunnels.values():
            await z.stop()
        await cluster.echo.close()
        await cluster.ca.stop(server)


@pytest.fixture
async def cluster(cluster_factory: ClusterFactory) -> Cluster:
    """The default two-node loopback cluster."""
    return await cluster_factory()


def creds_for(
    cluster: Cluster,
    ident: SpiffeId = SLEEP,
    signer: certs.Signer | None = None,
    **kwargs: object,
) -> Credentials:
    """Client credentials signed directly by the cluster CA (or another signer)."""
    signer = signer or cluster.ca.material.signer
    key = certs.generate_key()
    leaf = certs.issue_svid(ident, key.public_key(), signer, **kwargs)  # type: ignore[arg-type]
    return Credentials(
        certs.key_to_pem(key),
        (certs.cert_to_pem(leaf),),
        (certs.cert_to_pem(cluster.ca.material.root),),
    )


async def roundtrip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, payload: bytes, timeout: float = 10
) -> bytes:
    """Send payload, read back the same number of bytes."""
    writer.write(payload)
    await writer.drain()
    return await asyncio.wait_for(reader.readexactly(len(payload)), timeout)
