"""System test: the waypoint case with transparent capture, nodes and pods as network namespaces.

The client pod calls the Service VIP with plain HTTP. nftables on node A redirects it to ztunnel
A's :15001, which sends it over HBONE to the waypoint pod (its own namespace on node A, running
``ambient gateway --node node-a``). The waypoint routes it (a GAMMA route adding a header) and
opens HBONE to the server pod's IP:15008, which node B redirects to ztunnel B. A sniffer on the
inter-node link shows the request and its answer never cross in plaintext; the server sees the
waypoint's header; ztunnel B counts the waypoint as the peer and the waypoint the client.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.netns import SUFFIX, Topology, py, wait_for, why_not

NODE_A, NODE_B = f"wA{SUFFIX}", f"wB{SUFFIX}"
POD_A, POD_B, POD_W = f"wpA{SUFFIX}", f"wpB{SUFFIX}", f"wpW{SUFFIX}"
LINK_A, LINK_B = f"wlA{SUFFIX}", f"wlB{SUFFIX}"
NODE_A_IP, NODE_B_IP = "10.232.0.1", "10.232.0.2"
POD_A_IP, POD_B_IP, POD_W_IP = "10.232.1.2", "10.232.2.2", "10.232.3.2"
VIP, ECHO_PORT, CA_PORT = "10.96.232.10", 7777, 15012
SECRET = "WAYPOINT-SECRET-5c1e"


def mesh_docs() -> list[dict[str, object]]:
    """The pods, the Service using the waypoint, the waypoint and a route on the Service."""

    def pod(name: str, ip: str, node: str, **labels: str) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"serviceAccountName": name, "nodeName": node},
            "status": {"podIP": ip},
        }

    waypoint_labels = {
        "gateway.networking.k8s.io/gateway-name": "waypoint",
        "istio.io/dataplane-mode": "none",
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}},
        },
        pod("client", POD_A_IP, "node-a", app="client"),
        pod("echo", POD_B_IP, "node-b", app="echo"),
        pod("waypoint", POD_W_IP, "node-a", **waypoint_labels),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "echo",
                "namespace": "default",
                "labels": {"istio.io/use-waypoint": "waypoint"},
            },
            "spec": {
                "clusterIP": VIP,
                "selector": {"app": "echo"},
                "ports": [{"name": "http", "port": 80, "targetPort": ECHO_PORT}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": "default"},
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
                "parentRefs": [{"group": "", "kind": "Service", "name": "echo"}],
                "rules": [
                    {
                        "filters": [
                            {
                                "type": "RequestHeaderModifier",
                                "requestHeaderModifier": {
                                    "add": [{"name": "x-waypoint", "value": "seen"}]
                                },
                            }
                        ],
                        "backendRefs": [{"name": "echo", "port": 80}],
                    }
                ],
            },
        },
    ]


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    reason = why_not()
    if reason is not None:
        print(f"SKIP network-namespace waypoint test: {reason}")
        pytest.skip(reason)
    t = Topology(tmp_path)
    try:
        yield t
    finally:
        t.teardown()


def _get(t: Topology, netns: str, url: str) -> str:
    code = (
        f"import urllib.request;print(urllib.request.urlopen('{url}',timeout=10).read().decode())"
    )
    return t.x(netns, *py(code)).stdout


def _wait_ready(t: Topology, netns: str, url: str) -> None:
    code = (
        "import time,urllib.request\n"
        "end=time.time()+30\n"
        "while time.time()<end:\n"
        f"    try: urllib.request.urlopen('{url}',timeout=1); raise SystemExit(0)\n"
        "    except OSError: time.sleep(0.1)\n"
        "raise SystemExit(1)\n"
    )
    t.x(netns, *py(code))


def test_waypoint_traffic_is_captured_routed_and_carried_over_hbone(topology: Topology) -> None:
    t = topology
    for name in (NODE_A, NODE_B, POD_A, POD_B, POD_W):
        t.ns(name)
    t.veth(NODE_A, LINK_A, f"{NODE_A_IP}/24", NODE_B, LINK_B, f"{NODE_B_IP}/24")
    for pod, node, net, tag in (
        (POD_A, NODE_A, "10.232.1", "a"),
        (POD_B, NODE_B, "10.232.2", "b"),
        (POD_W, NODE_A, "10.232.3", "w"),
    ):
        t.veth(pod, f"we{tag}{SUFFIX}", f"{net}.2/24", node, f"wv{tag}{SUFFIX}", f"{net}.1/24")
        t.x(pod, "ip", "route", "add", "default", "via", f"{net}.1")
    for net in ("10.232.2.0/24",):
        t.x(NODE_A, "ip", "route", "add", net, "via", NODE_B_IP)
    for net in ("10.232.1.0/24", "10.232.3.0/24"):
        t.x(NODE_B, "ip", "route", "add", net, "via", NODE_A_IP)
    for node in (NODE_A, NODE_B):
        t.x(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # Node A captures the client pod's outbound TCP (not the waypoint's: it is not enrolled);
    # node B hands HBONE for its pods to ztunnel B.
    for node, rule in (
        (NODE_A, f'iifname "wva{SUFFIX}" meta l4proto tcp redirect to :15001'),
        (NODE_B, f'iifname "{LINK_B}" tcp dport 15008 redirect to :15008'),
    ):
        t.redirect(node, rule)
    (t.directory / "mesh.yaml").write_text(yaml.safe_dump_all(mesh_docs()))

    ambient = [sys.executable, "-m", "gateway.cli"]
    t.spawn(POD_B, "echo", sys.executable, "-m", "gateway.demo.echo", "--host", "0.0.0.0",
            "--port", str(ECHO_PORT), "--name", "echo")  # fmt: skip
    t.spawn(NODE_A, "ca", *ambient, "ca", "--state-dir", "ca", "-f", "mesh.yaml",
            "--listen", f"{NODE_A_IP}:{CA_PORT}")  # fmt: skip
    wait_for(t, NODE_A, NODE_A_IP, CA_PORT)
    common = ["-f", "mesh.yaml", "--ca", f"{NODE_A_IP}:{CA_PORT}", "--ca-root", "ca/root-cert.pem"]
    t.spawn(NODE_A, "ztunnel-a", *ambient, "ztunnel", "--node", "node-a", *common,
            "--capture", "0.0.0.0:15001", "--inbound-bind", "0.0.0.0")  # fmt: skip
    t.spawn(NODE_B, "ztunnel-b", *ambient, "ztunnel", "--node", "node-b", *common,
            "--inbound-bind", "0.0.0.0")  # fmt: skip
    t.spawn(POD_W, "waypoint", *ambient, "gateway", *common, "--node", "node-a",
            "--admin", "127.0.0.1:15000")  # fmt: skip
    for netns, url in (
        (NODE_A, "http://127.0.0.1:15021/healthz/ready"),
        (NODE_B, "http://127.0.0.1:15021/healthz/ready"),
        (POD_W, "http://127.0.0.1:15000/healthz/ready"),
    ):
        _wait_ready(t, netns, url)
    wait_for(t, POD_B, "127.0.0.1", ECHO_PORT)

    stop = t.directory / "capture.stop"
    capture = t.spawn(
        NODE_B,
        "capture",
        sys.executable,
        str(Path(__file__).parents[1] / "mesh" / "netns_capture.py"),
        LINK_B,
        "20",
        str(stop),
        SECRET,
    )
    log = t.directory / "capture.log"
    deadline = time.monotonic() + 10
    while "ready" not in log.read_text():  # the sniffer has bound its socket
        assert capture.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    client = (
        "import json,urllib.request\n"
        f"r=urllib.request.Request('http://{VIP}/hello',headers={{'x-secret':'{SECRET}'}})\n"
        "print(urllib.request.urlopen(r,timeout=10).read().decode())\n"
    )
    answer = json.loads(t.x(POD_A, *py(client)).stdout)
    assert answer["backend"] == "echo"
    assert answer["headers"]["x-waypoint"] == "seen"
    assert answer["headers"]["x-secret"] == SECRET
    stop.touch()
    capture.wait(10)
    report = json.loads((t.directory / "capture.log").read_text().strip().splitlines()[-1])
    assert report["found"][SECRET] == 0, f"the request crossed the link in plaintext: {report}"
    assert report["hbone_frames"] > 0, f"no HBONE (:15008) traffic on the link: {report}"

    node_b = _get(t, NODE_B, "http://127.0.0.1:15020/metrics")
    assert any(
        line.startswith("istio_tcp_connections_opened_total{")
        and 'source_principal="spiffe://cluster.local/ns/default/sa/waypoint"' in line
        and 'destination_workload="echo"' in line
        for line in node_b.splitlines()
    ), node_b
    waypoint = _get(t, POD_W, "http://127.0.0.1:15000/metrics")
    assert any(
        line.startswith("istio_requests_total{")
        and 'source_principal="spiffe://cluster.local/ns/default/sa/client"' in line
        and 'source_workload="client"' in line
        and 'response_code="200"' in line
        for line in waypoint.splitlines()
    ), waypoint
