"""A port something else holds is one line naming the port, what chose it and its holder; exit 1.

Every command, with its port pre-occupied: by a plain test socket (the holder is this test
process), and for the gateway also by another ``ambient gateway`` with a different config, which
used to share the port silently through SO_REUSEPORT and split the clients between the two.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ports import holder_pid
from tests.fixtures.echo_process import EchoProcess, gateway_yaml, route_yaml, service_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.processes import port_free

MESH = """
apiVersion: v1
kind: Namespace
metadata: {name: default, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: sleep, namespace: default, labels: {app: sleep}}
spec: {serviceAccountName: sleep, nodeName: node-a}
status: {podIP: 127.0.10.11}
"""

POOL = """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: pool, namespace: default}
spec:
  selector: {matchLabels: {app: vllm}}
  targetPorts: [{number: 8000}]
"""


@pytest.fixture
def taken() -> Iterator[int]:
    """A port a plain socket of this process listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def refused(*args: str, cwd: Path | None = None) -> str:
    """Run ``ambient *args``; assert exit 1 and one error line; that line."""
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if "already in use" in line]
    assert len(lines) == 1, output
    return lines[0]


def test_gateway_listener_port_taken_names_the_listener_and_holder(
    tmp_path: Path, taken: int
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(gateway_yaml(taken, name="edge"))
    line = refused("gateway", "-f", str(config), "--bind-address", "127.0.0.1", "--admin", "off")
    assert line.startswith("ambient gateway: port ")
    assert f"port {taken} on 127.0.0.1 (Gateway default/edge listener http)" in line
    assert f"held by pid {os.getpid()} (" in line


def test_gateway_admin_port_taken_is_reported_before_any_listener(
    tmp_path: Path, taken: int
) -> None:
    config = tmp_path / "gw.yaml"
    config.write_text(gateway_yaml(free_port()))
    args = ["gateway", "-f", str(config), "--bind-address", "127.0.0.1"]
    for workers in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args, "--admin", f"127.0.0.1:{taken}",
             "--workers", workers],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 1, done.stderr
        assert f"port {taken} on 127.0.0.1 (--admin 127.0.0.1:{taken})" in done.stderr
        assert "listening on" not in done.stderr.replace("admin API listening", "")
        assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("first_workers", "second_workers"), [("2", "1"), ("1", "2")])
def test_second_gateway_on_the_same_port_is_refused(
    tmp_path: Path, echo_a: EchoProcess, first_workers: str, second_workers: str
) -> None:
    port = free_port()
    first_config = tmp_path / "first.yaml"
    first_config.write_text(
        gateway_yaml(port) + service_yaml("svc-a", echo_a.port) + route_yaml("r", "svc-a")
    )
    second_config = tmp_path / "second.yaml"  # serves nothing: 404 for every path
    second_config.write_text(gateway_yaml(port, name="other"))
    first = GatewayProcess([first_config], "--workers", first_workers)
    try:
        first.wait_ready(timeout=30)
        line = refused(
            "gateway", "-f", str(second_config), "--bind-address", "127.0.0.1",
            "--admin", f"127.0.0.1:{free_port()}", "--workers", second_workers,
        )  # fmt: skip
        assert f"port {port} on 127.0.0.1 (Gateway default/other listener http)" in line
        assert f"held by pid {first.proc.pid} (" in line  # the supervisor, or the one process
        with httpx.Client(timeout=5) as client:
            statuses = {
                client.get(
                    f"http://127.0.0.1:{port}/x/{i}", headers={"connection": "close"}
                ).status_code
                for i in range(40)
            }
        assert statuses == {200}
    finally:
        assert first.stop() == 0, first.output()


def test_sim_port_taken(taken: int) -> None:
    line = refused("sim", "--listen", f"127.0.0.1:{taken}", "--duration", "5")
    assert line.startswith(f"ambient sim: port {taken} on 127.0.0.1 (--listen)")
    assert f"held by pid {os.getpid()}" in line


def test_epp_port_taken(tmp_path: Path, taken: int) -> None:
    pool = tmp_path / "pool.yaml"
    pool.write_text(POOL)
    line = refused("epp", "-f", str(pool), "--pool", "pool", "--listen", f"127.0.0.1:{taken}")
    assert line.startswith(f"ambient epp: port {taken} on 127.0.0.1 (--listen 127.0.0.1:{taken})")
    assert f"held by pid {os.getpid()}" in line


def test_ca_and_ztunnel_ports_taken(tmp_path: Path, taken: int) -> None:
    mesh = tmp_path / "mesh.yaml"
    mesh.write_text(MESH)
    state = tmp_path / "ca"
    line = refused(
        "ca", "--state-dir", str(state), "-f", str(mesh), "--listen", f"127.0.0.1:{taken}"
    )
    assert line.startswith(f"ambient ca: port {taken} on 127.0.0.1 (--listen 127.0.0.1:{taken})")
    assert f"held by pid {os.getpid()}" in line
    # The CA wrote its root before it tried to listen: the ztunnel can start far enough to bind.
    base = [
        "ztunnel", "--node", "node-a", "-f", str(mesh), "--ca", f"127.0.0.1:{free_port()}",
        "--ca-root", str(state / "root-cert.pem"), "--inbound-bind", "127.0.0.1",
    ]  # fmt: skip
    free = {flag: f"127.0.0.1:{free_port()}" for flag in ("--admin", "--metrics", "--ready")}
    cases = {
        "--hbone-port": ["--hbone-port", str(taken)],
        "--metrics": ["--metrics", f"127.0.0.1:{taken}"],
        "--forward": ["--forward", f"{taken}=echo.default:80"],
    }
    for flag, extra in cases.items():
        ports = [arg for pair in free.items() if pair[0] != flag for arg in pair]
        hbone = [] if flag == "--hbone-port" else ["--hbone-port", str(free_port())]
        line = refused(*base, *hbone, *ports, *extra)
        assert line.startswith(f"ambient ztunnel: port {taken} on 127.0.0.1 ({flag} "), line
        assert f"held by pid {os.getpid()}" in line


def test_workers_get_a_port_a_reload_adds_and_free_one_it_drops(
    tmp_path: Path, echo_a: EchoProcess
) -> None:
    """With --workers 2 the supervisor binds a port a reload adds and hands it to the workers;
    a reload that drops it frees it (the supervisor's copy and the workers' are closed)."""
    port, added = free_port(), free_port()
    routes = service_yaml("svc-a", echo_a.port) + route_yaml("r", "svc-a")
    config = tmp_path / "routes.yaml"
    config.write_text(gateway_yaml(port) + routes)
    gw = GatewayProcess([config], "--workers", "2")
    try:
        gw.wait_ready(timeout=30)
        two = gateway_yaml(port).replace(
            "    - {name: http,",
            f"    - {{name: extra, port: {added}, protocol: HTTP}}\n    - {{name: http,",
        )
        config.write_text(two + routes)
        gw.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        served = 0
        while served < 20:  # a new connection each: the port is served, by whichever worker
            assert time.monotonic() < deadline, gw.output()
            try:
                response = httpx.get(f"http://127.0.0.1:{added}/", timeout=2)
            except httpx.HTTPError:
                time.sleep(0.05)
                continue
            assert response.status_code == 200
            served += 1
        assert holder_pid(added) == gw.proc.pid
        config.write_text(gateway_yaml(port) + routes)
        gw.proc.send_signal(signal.SIGHUP)
        while not port_free(added):
            assert time.monotonic() < deadline + 15, gw.output()
            time.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        assert gw.stop() == 0, gw.output()
