"""``ambient gateway --in-cluster`` as it runs in a pod: the API server's address from
KUBERNETES_SERVICE_HOST/PORT, its CA and the bearer token from the ServiceAccount directory. The
API server is tests/fixtures/kube_api.py's double (standing in for kube-apiserver), here over TLS
and refusing requests without the token; the directory is a temporary one
(AMBIENT_SERVICE_ACCOUNT_DIR), the kubernetes package's own in-cluster loader reads it."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from cluster.client import SERVICE_ACCOUNT_DIR, connect, service_account_dir
from cluster.errors import ClusterError
from tests.fixtures.cluster_objects import (
    endpoint_slice,
    gateway,
    gateway_class,
    http_route,
    service,
)
from tests.fixtures.echo_process import EchoProcess
from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.kube_api import GATEWAY, InCluster, in_cluster_api  # noqa: F401  (fixture)


def test_in_cluster_gateway_trusts_the_ca_and_sends_the_token_of_its_service_account(
    in_cluster_api: InCluster,  # noqa: F811
) -> None:
    api = in_cluster_api.api
    echo = EchoProcess("backend-a")
    port = free_port()
    for obj in (
        gateway_class(),
        gateway(port),
        service("a"),
        endpoint_slice("a", echo.port),
        http_route("r1", "/", "a"),
    ):
        api.apply(obj)
    process = GatewayProcess(
        [], "--in-cluster", "--lease-namespace", "default", env=in_cluster_api.env
    )
    try:
        process.wait_ready()
        response = httpx.get(f"http://127.0.0.1:{port}/x", timeout=2)
        assert response.headers["x-echo-backend"] == "backend-a"
        deadline = time.monotonic() + 10
        while "status" not in (api.get(GATEWAY, "httproutes", "default", "r1") or {}):
            assert time.monotonic() < deadline, process.output()
            time.sleep(0.05)
        assert api.unauthorized == 0 and len(api.requests) > 10
    finally:
        assert process.stop() == 0, process.output()
        echo.stop()


def test_the_service_account_directory_is_the_pods_unless_the_environment_names_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert service_account_dir({}) == SERVICE_ACCOUNT_DIR
    assert service_account_dir({"AMBIENT_SERVICE_ACCOUNT_DIR": "/sa"}) == Path("/sa")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "6443")
    monkeypatch.setenv("AMBIENT_SERVICE_ACCOUNT_DIR", str(tmp_path))
    with pytest.raises(ClusterError) as info:
        connect(None)
    assert "Service token file does not exist" in str(info.value)
    assert f"service account directory {tmp_path}" in str(info.value)
