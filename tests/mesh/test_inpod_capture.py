"""System test: cluster-mode ztunnels capture enrolled Pods inside the Pods' network namespaces.

Two nodes and three Pods are network namespaces; the Pods, their nodes and their namespaces'
enrollment come from tests/fixtures/kube_api.py (a stand-in for kube-apiserver, none can run
here), which listens on an address of this process's namespace that each node reaches over its
own link. The test installs no capture rule: each ztunnel (``--in-pod-capture``) finds its
enrolled Pods' namespaces, installs the redirect there and listens inside them. A plain client in
Pod A reaching Pod B's IP is carried over HBONE (node B's ztunnel counts it as mutual_tls from Pod
A's identity); the un-enrolled Pod's namespace gets no rules and its traffic is not counted; a
deleted Pod's rules are removed.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from tests.fixtures.cluster_mesh import NODE_CLAIM, ZTUNNEL_ACCOUNT, node_token
from tests.fixtures.kube_api import KUBECONFIG_TOKEN, KubeApiServer
from tests.fixtures.netns import SUFFIX, Topology, py, run, why_not
from tests.mesh.conftest import namespace, pod

NODE_A, NODE_B = f"iA{SUFFIX}", f"iB{SUFFIX}"
POD_A, POD_B, POD_C = f"ipA{SUFFIX}", f"ipB{SUFFIX}", f"ipC{SUFFIX}"
API_IP, NODE_A_UP, ROOT_B, NODE_B_UP = "10.233.9.1", "10.233.9.2", "10.233.9.5", "10.233.9.6"
NODE_A_IP, NODE_B_IP = "10.233.0.1", "10.233.0.2"
POD_A_IP, POD_B_IP, POD_C_IP = "10.233.1.2", "10.233.2.2", "10.233.3.2"
ECHO_PORT, CA_PORT = 7777, 15012
CLIENT = "spiffe://cluster.local/ns/default/sa/client"


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    reason = why_not()
    if reason is not None:
        print(f"SKIP in-pod capture system test: {reason}")
        pytest.skip(reason)
    t = Topology(tmp_path)
    try:
        yield t
    finally:
        t.teardown()


def uplink(t: Topology, node: str, root_if: str, root_ip: str, node_if: str, node_ip: str) -> None:
    """A link from this process's namespace to ``node`` (gone with the node's namespace)."""
    run("ip", "link", "add", root_if, "type", "veth", "peer", "name", node_if)
    run("ip", "link", "set", node_if, "netns", node)
    run("ip", "addr", "add", f"{root_ip}/30", "dev", root_if)
    run("ip", "link", "set", root_if, "up")
    t.x(node, "ip", "addr", "add", f"{node_ip}/30", "dev", node_if)
    t.x(node, "ip", "link", "set", node_if, "up")


def build(t: Topology) -> None:
    """Nodes A and B linked; Pods A and C on node A, Pod B on node B; uplinks to the API."""
    for name in (NODE_A, NODE_B, POD_A, POD_B, POD_C):
        t.ns(name)
    uplink(t, NODE_A, f"rA{SUFFIX}", API_IP, f"uA{SUFFIX}", NODE_A_UP)
    uplink(t, NODE_B, f"rB{SUFFIX}", ROOT_B, f"uB{SUFFIX}", NODE_B_UP)
    t.x(NODE_B, "ip", "route", "add", f"{API_IP}/32", "via", ROOT_B)
    t.veth(NODE_A, f"lA{SUFFIX}", f"{NODE_A_IP}/24", NODE_B, f"lB{SUFFIX}", f"{NODE_B_IP}/24")
    for pod_ns, node, n, ip in ((POD_A, NODE_A, 1, POD_A_IP), (POD_B, NODE_B, 2, POD_B_IP),
                                (POD_C, NODE_A, 3, POD_C_IP)):  # fmt: skip
        gateway = f"10.233.{n}.1"
        t.veth(pod_ns, f"e{n}{SUFFIX}", f"{ip}/24", node, f"v{n}{SUFFIX}", f"{gateway}/24")
        t.x(pod_ns, "ip", "route", "add", "default", "via", gateway)
    t.x(NODE_A, "ip", "route", "add", "10.233.2.0/24", "via", NODE_B_IP)
    for subnet in ("10.233.1.0/24", "10.233.3.0/24"):
        t.x(NODE_B, "ip", "route", "add", subnet, "via", NODE_A_IP)
    for node in (NODE_A, NODE_B):
        t.x(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def wait(t: Topology, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Poll ``condition`` until true; fail with the processes' logs after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        exited = [p for p in t.procs if p.poll() is not None]
        if exited or time.monotonic() > deadline:
            logs = "\n".join(
                f"--- {f.name} ---\n{f.read_text()[-3000:]}" for f in t.directory.glob("*.log")
            )
            raise AssertionError(f"{what}: not reached in {timeout}s\n{logs}")
        time.sleep(0.05)


def get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=0.5)
    except httpx.HTTPError:
        return None


def has_table(netns: str) -> bool:
    return run("ip", "netns", "exec", netns, "nft", "list", "table", "ip", "ambient",
               check=False).returncode == 0  # fmt: skip


def opened(metrics: str, **labels: str) -> float:
    """Sum of ``istio_tcp_connections_opened_total`` samples with all of ``labels``."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("istio_tcp_connections_opened_total{")
        and all(f'{k}="{v}"' in line for k, v in labels.items())
    )


def exchange(t: Topology, pod_ns: str, payload: str) -> str:
    """From ``pod_ns``, a plain TCP round trip to Pod B's echo; what came back."""
    client = (
        "import socket\n"
        f"s=socket.create_connection(('{POD_B_IP}',{ECHO_PORT}),5)\n"
        f"s.sendall(b'{payload}')\ns.shutdown(socket.SHUT_WR)\n"
        "got=b''\n"
        "while (d:=s.recv(65536)): got+=d\n"
        "print(got.decode())\n"
    )
    return t.x(pod_ns, *py(client)).stdout.strip()


def test_cluster_ztunnels_capture_enrolled_pods_in_their_namespaces(topology: Topology) -> None:
    t = topology
    build(t)
    api = KubeApiServer(bookmark_interval=0.2, token=KUBECONFIG_TOKEN, host=API_IP).start()
    try:
        run_mesh(t, api)
    finally:
        t.teardown()  # the processes go before the API server they watch
        api.close()


def run_mesh(t: Topology, api: KubeApiServer) -> None:
    kubeconfig = str(api.kubeconfig(t.directory / "kubeconfig"))
    api.apply_many(
        [
            namespace("default"),
            namespace("plain", ambient=False),
            pod("client", POD_A_IP, "node-a", "client"),
            pod("echo", POD_B_IP, "node-b", "echo"),
            pod("other", POD_C_IP, "node-a", "other", ns="plain"),
        ]
    )
    echo = (
        "import asyncio\nfrom tests.mesh.echo import Echo\n"
        "async def m():\n"
        f"    await Echo().start('0.0.0.0',{ECHO_PORT}); await asyncio.Event().wait()\n"
        "asyncio.run(m())\n"
    )
    t.spawn(POD_B, "echo", *py(echo))
    m = [sys.executable, "-m", "mesh"]
    t.spawn(NODE_A, "ca", *m, "ca", "--kubeconfig", kubeconfig, "--state-dir", "ca",
            "--listen", f"{NODE_A_IP}:{CA_PORT}")  # fmt: skip
    wait(t, lambda: (t.directory / "ca" / "root-cert.pem").exists(), "CA root")
    ups = {"node-a": (NODE_A, NODE_A_UP), "node-b": (NODE_B, NODE_B_UP)}
    for node, (netns, _) in ups.items():
        api.tokens[node_token(node)] = {"username": ZTUNNEL_ACCOUNT, "extra": {NODE_CLAIM: [node]}}
        token = t.directory / f"{node}.token"
        token.write_text(node_token(node) + "\n")
        t.spawn(netns, node, *m, "ztunnel", "--kubeconfig", kubeconfig, "--node", node,
                "--ca", f"{NODE_A_IP}:{CA_PORT}", "--ca-root", "ca/root-cert.pem",
                "--token-file", str(token), "--in-pod-capture",
                "--metrics", "0.0.0.0:15020", "--ready", "0.0.0.0:15021")  # fmt: skip
    for node, (_, ip) in ups.items():
        url = f"http://{ip}:15021/healthz/ready"
        wait(t, lambda url=url: (r := get(url)) is not None and r.status_code == 200, node)
    wait(t, lambda: has_table(POD_A) and has_table(POD_B), "rules in the enrolled Pods")

    assert exchange(t, POD_A, "through-the-mesh") == "through-the-mesh"

    def metrics(ip: str) -> str:
        response = get(f"http://{ip}:15020/metrics")
        return response.text if response is not None else ""

    secure = {"reporter": "destination", "connection_security_policy": "mutual_tls"}
    wait(
        t,
        lambda: opened(metrics(NODE_B_UP), **secure, source_principal=CLIENT) >= 1,
        "node-b counting Pod A's connection as mutual_tls from its identity",
    )

    # The un-enrolled Pod on node A: no rules in its namespace, its traffic goes straight to
    # Pod B, and neither ztunnel sees a connection.
    assert not has_table(POD_C)
    before = [opened(metrics(ip)) for ip in (NODE_A_UP, NODE_B_UP)]
    assert before[0] >= 1 and before[1] >= 1
    assert exchange(t, POD_C, "around-the-mesh") == "around-the-mesh"
    assert [opened(metrics(ip)) for ip in (NODE_A_UP, NODE_B_UP)] == before

    # Pod A deleted: node A's ztunnel removes its rules.
    delete_pod(api, "default", "client")
    wait(t, lambda: not has_table(POD_A), "Pod A's rules removed after its deletion")
    assert has_table(POD_B)


def delete_pod(api: KubeApiServer, ns: str, name: str) -> None:
    """Delete a Pod through the API double's wire protocol (what the kubelet's owner would)."""
    response = httpx.delete(
        f"{api.url}/api/v1/namespaces/{ns}/pods/{name}",
        headers={"Authorization": f"Bearer {KUBECONFIG_TOKEN}"},
        timeout=5,
    )
    assert response.status_code == 200, response.text
