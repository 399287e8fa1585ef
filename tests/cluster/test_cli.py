"""``ambient gateway --kubeconfig`` as a user runs it: a real process reading the API server
double (tests/fixtures/kube_api.py, a stand-in for kube-apiserver) and serving what it reads."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.cluster_objects import (
    endpoint_slice,
    gateway,
    gateway_class,
    http_route,
    service,
)
from tests.fixtures.echo_process import EchoProcess
from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.kube_api import GATEWAY, KubeApiServer


def test_ambient_gateway_kubeconfig_serves_routes_and_writes_status(
    kube_api: KubeApiServer, kubeconfig: str
) -> None:
    echo = EchoProcess("backend-a")
    port = free_port()
    for obj in (
        gateway_class(),
        gateway(port),
        service("a"),
        endpoint_slice("a", echo.port),
        http_route("r1", "/", "a"),
    ):
        kube_api.apply(obj)
    process = GatewayProcess([], "--kubeconfig", kubeconfig, "--lease-namespace", "default")
    try:
        process.wait_ready()
        response = httpx.get(f"http://127.0.0.1:{port}/x", timeout=2)
        assert response.status_code == 200
        assert response.headers["x-echo-backend"] == "backend-a"
        deadline = time.monotonic() + 10
        while "status" not in (kube_api.get(GATEWAY, "httproutes", "default", "r1") or {}):
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.05)
        lease = kube_api.get(
            "coordination.k8s.io", "leases", "default", "ambient-gateway-controller"
        )
        assert lease is not None and lease["spec"]["holderIdentity"]
    finally:
        assert process.stop() == 0, process.output()
        echo.stop()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give -f FILE (repeatable), --kubeconfig PATH or --in-cluster"),
        (["-f", "x.yaml", "--kubeconfig", "k"], "-f and --kubeconfig/--in-cluster are exclusive"),
        (["--kubeconfig", "k", "--in-cluster"], "--kubeconfig and --in-cluster are exclusive"),
        (["--kubeconfig", "k", "--workers", "2"], "cluster mode serves with --workers 1"),
    ],
)
def test_conflicting_sources_are_refused(args: list[str], message: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "gateway", "--admin", "off", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr


def test_an_unreadable_kubeconfig_is_a_clear_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "gateway", "--kubeconfig", "/nonexistent/kc"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "cannot load Kubernetes client config from /nonexistent/kc" in done.stderr


def test_a_gateway_still_retrying_discovery_stops_on_sigterm(
    kube_api: KubeApiServer, tmp_path: Path
) -> None:
    """An API server that refuses the token (401) keeps discovery retrying; SIGTERM still stops
    the process at once, with exit code 0, not after the fixture's kill."""
    wrong = kube_api.kubeconfig(tmp_path / "kubeconfig", token="not-the-token")
    process = GatewayProcess([], "--kubeconfig", str(wrong), "--lease-namespace", "default")
    try:
        deadline = time.monotonic() + 20
        while "discovery failed" not in process.output():
            assert process.proc.poll() is None, process.output()
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.05)
    finally:
        started = time.monotonic()
        code = process.stop()
        took = time.monotonic() - started
    assert code == 0, process.output()
    assert took < 10, f"SIGTERM took {took:.1f}s"
    assert "stopped before the gateway started" in process.output()
