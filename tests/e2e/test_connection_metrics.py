"""``ambient_gateway_downstream_connections_total`` and ``_active`` per listener port, as scraped.

A gateway subprocess with an HTTP and an HTTPS listener; real clients over HTTP/1.1, cleartext
HTTP/2 (prior knowledge), TLS with ALPN http/1.1 and h2, and a client that fails the handshake.
While a client holds its connection the port's gauge counts it; once every client closed, the
gauge is back at 0 and the counter says how many connections each port accepted.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.certs import authority, secret_yaml
from tests.fixtures.echo_process import EchoProcess, service_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port

HOST = "conn.example.test"


def _config(http_port: int, https_port: int, echo_port: int) -> str:
    leaf = authority().issue(HOST)
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners:
    - {{name: http, port: {http_port}, protocol: HTTP}}
    - {{name: https, port: {https_port}, protocol: HTTPS, hostname: {HOST},
        tls: {{certificateRefs: [{{name: cert}}]}}}}
---
{secret_yaml("cert", leaf)}{service_yaml("echo", echo_port)}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
    - backendRefs: [{{name: echo, port: 80}}]
"""


@pytest.fixture(scope="module")
def gateway(
    echo_a: EchoProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[GatewayProcess, int, int]]:
    http_port, https_port = free_port(), free_port()
    path = tmp_path_factory.mktemp("conn-metrics") / "routes.yaml"
    path.write_text(_config(http_port, https_port, echo_a.port))
    process = GatewayProcess([Path(path)])
    try:
        process.wait_ready()
        yield process, http_port, https_port
    finally:
        process.stop()


def _connections(admin: str) -> dict[tuple[str, str], float]:
    """(sample name, listener_port) -> value of the downstream connection series."""
    text = httpx.get(f"{admin}/metrics", timeout=5).text
    return {
        (sample.name, sample.labels["listener_port"]): sample.value
        for family in text_string_to_metric_families(text)
        if family.name.startswith("ambient_gateway_downstream_connections")
        for sample in family.samples
    }


def _wait_active(admin: str, port: int, value: float, timeout: float = 10.0) -> None:
    key = ("ambient_gateway_downstream_connections_active", str(port))
    deadline = time.monotonic() + timeout
    seen = None
    while time.monotonic() < deadline:
        seen = _connections(admin).get(key)
        if seen == value:
            return
        time.sleep(0.05)
    raise AssertionError(f"active connections on {port}: {seen}, expected {value}")


def _tls_client(http2: bool) -> httpx.Client:
    context = ssl.create_default_context(cadata=authority().pem.decode())
    return httpx.Client(verify=context, http1=not http2, http2=http2, timeout=5)


def test_connections_are_counted_per_listener_and_protocol(
    gateway: tuple[GatewayProcess, int, int],
) -> None:
    process, http_port, https_port = gateway
    admin = process.admin
    before = _connections(admin)

    def accepted(port: int) -> float:
        key = ("ambient_gateway_downstream_connections_total", str(port))
        return _connections(admin).get(key, 0.0) - before.get(key, 0.0)

    clients = [
        (http_port, "http", httpx.Client(timeout=5)),
        (http_port, "http", httpx.Client(http1=False, http2=True, timeout=5)),
        (https_port, "https", _tls_client(http2=False)),
        (https_port, "https", _tls_client(http2=True)),
    ]
    versions = []
    for port, scheme, client in clients:
        # The TLS clients connect to loopback and name the listener's host in SNI and Host.
        response = client.get(
            f"{scheme}://127.0.0.1:{port}/c",
            headers={"host": HOST},
            extensions={"sni_hostname": HOST} if scheme == "https" else {},
        )
        assert response.status_code == 200
        versions.append(response.http_version)
    assert versions == ["HTTP/1.1", "HTTP/2", "HTTP/1.1", "HTTP/2"]
    _wait_active(admin, http_port, 2)
    _wait_active(admin, https_port, 2)

    # Plain text on the TLS port: a failed handshake is a connection accepted and closed too.
    with socket.create_connection(("127.0.0.1", https_port), timeout=5) as raw:
        raw.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        raw.recv(100)

    for _, _, client in clients:
        client.close()
    _wait_active(admin, http_port, 0)
    _wait_active(admin, https_port, 0)
    assert accepted(http_port) == 2
    assert accepted(https_port) == 3
