"""System test: two nodes and two pods as network namespaces, nftables capture, HBONE on the wire.

A plain TCP client in pod A talks to pod B's IP. nftables on node A redirects it to ztunnel A's
:15001; ztunnel A carries it over HBONE (mTLS) to pod B's IP:15008, which node B redirects to
ztunnel B. A raw AF_PACKET capture on the inter-node link proves the payload never crosses in
plaintext (a control message sent outside the mesh is seen, so the sniffer works), and ztunnel A's
metrics count the connection as mutual_tls.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.netns import REPO, SUFFIX, Topology, py, run, wait_for, why_not

NODE_A, NODE_B = f"mA{SUFFIX}", f"mB{SUFFIX}"
POD_A, POD_B = f"pA{SUFFIX}", f"pB{SUFFIX}"
LINK_A, LINK_B = f"lA{SUFFIX}", f"lB{SUFFIX}"
POD_A_IP, POD_B_IP = "10.231.1.2", "10.231.2.2"
NODE_A_IP, NODE_B_IP = "10.231.0.1", "10.231.0.2"
ECHO_PORT, CA_PORT = 7777, 15012
SECRET, CONTROL = "MESH-SECRET-PAYLOAD-7f3a", "PLAINTEXT-CONTROL-91bd"


@pytest.fixture
def topology(tmp_path: Path) -> Iterator[Topology]:
    reason = why_not()
    if reason is not None:
        print(f"SKIP network-namespace system test: {reason}")
        pytest.skip(reason)
    t = Topology(tmp_path)
    try:
        yield t
    finally:
        t.teardown()


def test_pod_traffic_is_carried_over_hbone(topology: Topology) -> None:
    t = topology
    for name in (NODE_A, NODE_B, POD_A, POD_B):
        t.ns(name)
    t.veth(NODE_A, LINK_A, f"{NODE_A_IP}/24", NODE_B, LINK_B, f"{NODE_B_IP}/24")
    t.veth(POD_A, f"eA{SUFFIX}", f"{POD_A_IP}/24", NODE_A, f"vA{SUFFIX}", "10.231.1.1/24")
    t.veth(POD_B, f"eB{SUFFIX}", f"{POD_B_IP}/24", NODE_B, f"vB{SUFFIX}", "10.231.2.1/24")
    t.x(POD_A, "ip", "route", "add", "default", "via", "10.231.1.1")
    t.x(POD_B, "ip", "route", "add", "default", "via", "10.231.2.1")
    t.x(NODE_A, "ip", "route", "add", "10.231.2.0/24", "via", NODE_B_IP)
    t.x(NODE_B, "ip", "route", "add", "10.231.1.0/24", "via", NODE_A_IP)
    for node in (NODE_A, NODE_B):
        t.x(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    # Node A: pod A's outbound TCP goes to ztunnel A's capture port; node B: HBONE to pod B's
    # IP goes to ztunnel B (which reads the original destination to pick pod B's certificate).
    for node, rule in (
        (NODE_A, f'iifname "vA{SUFFIX}" meta l4proto tcp redirect to :15001'),
        (NODE_B, f'iifname "{LINK_B}" tcp dport 15008 redirect to :15008'),
    ):
        t.redirect(node, rule)

    ambient = {"istio.io/dataplane-mode": "ambient"}
    docs = [
        {"kind": "Namespace", "metadata": {"name": "default", "labels": ambient}},
        {
            "kind": "Pod",
            "metadata": {"name": "client", "namespace": "default", "labels": {"app": "client"}},
            "spec": {"serviceAccountName": "client", "nodeName": "node-a"},
            "status": {"podIP": POD_A_IP},
        },
        {
            "kind": "Pod",
            "metadata": {"name": "echo", "namespace": "default", "labels": {"app": "echo"}},
            "spec": {"serviceAccountName": "echo", "nodeName": "node-b"},
            "status": {"podIP": POD_B_IP},
        },
    ]
    (t.directory / "mesh.yaml").write_text(yaml.safe_dump_all(docs))
    echo = (
        "import asyncio,sys\nsys.path.insert(0,'" + str(REPO) + "')\n"
        "from tests.mesh.echo import Echo\n"
        "async def m():\n    e=Echo(); await e.start('0.0.0.0'," + str(ECHO_PORT) + ")\n"
        "    await asyncio.sleep(120)\nasyncio.run(m())\n"
    )
    t.spawn(POD_B, "echo", *py(echo))
    m = [sys.executable, "-m", "mesh"]
    t.spawn(
        NODE_A,
        "ca",
        *m,
        "ca",
        "--state-dir",
        "ca",
        "-f",
        "mesh.yaml",
        "--listen",
        f"{NODE_A_IP}:{CA_PORT}",
    )
    wait_for(t, NODE_A, NODE_A_IP, CA_PORT)
    common = ["-f", "mesh.yaml", "--ca", f"{NODE_A_IP}:{CA_PORT}", "--ca-root", "ca/root-cert.pem"]
    t.spawn(
        NODE_A,
        "ztunnel-a",
        *m,
        "ztunnel",
        "--node",
        "node-a",
        *common,
        "--capture",
        "0.0.0.0:15001",
        "--inbound-bind",
        "0.0.0.0",
    )
    t.spawn(
        NODE_B, "ztunnel-b", *m, "ztunnel", "--node", "node-b", *common, "--inbound-bind", "0.0.0.0"
    )
    wait_for(t, NODE_A, "127.0.0.1", 15021)
    wait_for(t, NODE_B, "127.0.0.1", 15021)
    wait_for(t, POD_B, "127.0.0.1", ECHO_PORT)
    ready = "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:15021/healthz/ready').read())"
    for node in (NODE_A, NODE_B):
        for _ in range(50):
            if run("ip", "netns", "exec", node, *py(ready), check=False).returncode == 0:
                break
            time.sleep(0.2)

    stop = t.directory / "capture.stop"
    capture = t.spawn(
        NODE_B,
        "capture",
        sys.executable,
        str(Path(__file__).with_name("netns_capture.py")),
        LINK_B,
        "20",
        str(stop),
        SECRET,
        CONTROL,
    )
    time.sleep(0.5)

    client = (
        "import socket\n"
        f"s=socket.create_connection(('{POD_B_IP}',{ECHO_PORT}),5)\n"
        "total=b''\n"
        "for i in range(20):\n"
        f"    msg=('{SECRET}-%d'%i).encode()*50\n"
        "    s.sendall(msg)\n"
        "    got=b''\n"
        "    while len(got)<len(msg): got+=s.recv(65536)\n"
        "    assert got==msg\n"
        "print('ok')\n"
    )
    out = t.x(POD_A, *py(client))
    assert out.stdout.strip() == "ok"
    # Control: the same kind of payload sent from node A itself (not a pod) is not captured by
    # nftables, crosses the link in plaintext and must be seen by the sniffer.
    control = (
        f"import socket\ns=socket.create_connection(('{POD_B_IP}',{ECHO_PORT}),5)\n"
        f"s.sendall(b'{CONTROL}'*20)\nprint(s.recv(10))\n"
    )
    t.x(NODE_A, *py(control))
    time.sleep(0.5)
    stop.touch()
    capture.wait(10)
    report_line = (t.directory / "capture.log").read_text().strip().splitlines()[-1]
    report = json.loads(report_line)
    assert report["found"][CONTROL] > 0, f"sniffer saw nothing in plaintext: {report}"
    assert report["found"][SECRET] == 0, f"pod payload crossed the link in plaintext: {report}"
    assert report["hbone_frames"] > 0, f"no HBONE (:15008) traffic on the link: {report}"

    metrics = t.x(
        NODE_A,
        *py(
            "import urllib.request;print(urllib.request.urlopen('http://127.0.0.1:15020/metrics').read().decode())"
        ),
    ).stdout
    opened = [
        line
        for line in metrics.splitlines()
        if line.startswith("istio_tcp_connections_opened_total{")
        and 'connection_security_policy="mutual_tls"' in line
        and 'source_workload="client"' in line
        and 'destination_workload="echo"' in line
    ]
    assert opened and float(opened[0].rsplit(" ", 1)[1]) >= 1
    sent = [
        line
        for line in metrics.splitlines()
        if line.startswith("istio_tcp_received_bytes_total{") and 'reporter="source"' in line
    ]
    assert sent and float(sent[0].rsplit(" ", 1)[1]) >= 20 * 50 * len(SECRET)
