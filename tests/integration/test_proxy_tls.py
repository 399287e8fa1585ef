"""HTTPS listeners on the data path: TLS termination, ALPN h2 and http/1.1, SNI, reload, refusals.

Real TLS over loopback: certificates from a throwaway CA in Secrets, clients that verify them
(httpx with HTTP/2 and HTTP/1.1, and the ``ssl`` module for handshake-level checks).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl

import httpx
import pytest

from gateway.demo.echo import EchoServer
from gateway.observability.metrics import IstioMetrics
from gateway.observability.telemetry import GatewayTelemetry
from gateway.snapshot import SnapshotHolder
from tests.fixtures.certs import Leaf, authority, secret_yaml
from tests.fixtures.echo_process import service_yaml
from tests.fixtures.proxy import holder_from_yaml

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)


def tls_config(port: int, echo_port: int, leaves: dict[str, Leaf]) -> str:
    """A Gateway with one HTTPS listener per hostname in ``leaves`` on ``port``, each with its
    Secret, and a route per hostname to the echo backend (path /<hostname label>)."""
    listeners = "\n".join(
        f"    - {{name: l-{i}, port: {port}, protocol: HTTPS, hostname: '{host}', "
        f"tls: {{certificateRefs: [{{name: cert-{i}}}]}}}}"
        for i, host in enumerate(leaves)
    )
    secrets = "".join(
        "---\n" + secret_yaml(f"cert-{i}", leaf) for i, leaf in enumerate(leaves.values())
    )
    routes = "".join(
        f"""---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r-{i}, namespace: default}}
spec:
  parentRefs: [{{name: gw, sectionName: l-{i}}}]
  hostnames: ['{host}']
  rules:
    - backendRefs: [{{name: echo, port: 80}}]
"""
        for i, host in enumerate(leaves)
    )
    gateway = f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners:
{listeners}
"""
    return gateway + secrets + routes + service_yaml("echo", echo_port)


def client_context(alpn: list[str] | None = None) -> ssl.SSLContext:
    """A client context trusting only the test CA."""
    context = ssl.create_default_context(cadata=authority().pem.decode())
    if alpn is not None:
        context.set_alpn_protocols(alpn)
    return context


def fingerprint(writer: asyncio.StreamWriter) -> bytes:
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    return hashlib.sha256(der).digest()


@pytest.fixture(scope="module")
def leaves() -> dict[str, Leaf]:
    ca = authority()
    return {"a.test": ca.issue("a.test"), "b.test": ca.issue("b.test")}


@pytest.fixture
async def tls_gateway(
    echo: EchoServer, gateway_factory, free_port: int, leaves: dict[str, Leaf]
) -> tuple[SnapshotHolder, IstioMetrics]:
    holder = holder_from_yaml(tls_config(free_port, echo.port, leaves))
    assert free_port in holder.current.tls
    metrics = IstioMetrics()
    await gateway_factory(holder, telemetry=GatewayTelemetry(metrics))
    return holder, metrics


async def get(port: int, host: str, *, http2: bool, path: str = "/echo") -> httpx.Response:
    """One request to https://<host>:<port> resolved to loopback (SNI = host), verifying it."""
    transport = httpx.AsyncHTTPTransport(
        verify=client_context(), http2=http2, http1=not http2 or True
    )
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        return await client.get(
            f"https://127.0.0.1:{port}{path}",
            headers={"host": host},
            extensions={"sni_hostname": host},
        )


async def test_https_listener_serves_http2_and_http11(tls_gateway, free_port: int) -> None:
    for http2, version in ((True, "HTTP/2"), (False, "HTTP/1.1")):
        response = await get(free_port, "a.test", http2=http2)
        assert response.status_code == 200
        assert response.http_version == version
        seen = json.loads(response.content)
        assert seen["headers"]["x-forwarded-proto"] == "https"
        assert seen["host"] == "a.test"


async def test_certificate_chosen_by_sni(tls_gateway, free_port: int, leaves) -> None:
    for name in ("a.test", "b.test"):
        _, writer = await asyncio.open_connection(
            "127.0.0.1", free_port, ssl=client_context(), server_hostname=name
        )
        try:
            assert fingerprint(writer) == leaves[name].fingerprint
        finally:
            writer.close()


async def test_host_of_another_listener_is_misdirected(tls_gateway, free_port: int) -> None:
    transport = httpx.AsyncHTTPTransport(verify=client_context(), http2=True)
    async with httpx.AsyncClient(transport=transport, timeout=5) as client:
        response = await client.get(
            f"https://127.0.0.1:{free_port}/echo",
            headers={"host": "b.test"},
            extensions={"sni_hostname": "a.test"},
        )
    assert response.status_code == 421


async def test_certificates_reload_with_the_config(
    tls_gateway, echo: EchoServer, free_port: int, leaves
) -> None:
    holder, _ = tls_gateway
    renewed = {"a.test": authority().issue("a.test"), "b.test": leaves["b.test"]}
    holder.current = holder_from_yaml(tls_config(free_port, echo.port, renewed), 2).current
    _, writer = await asyncio.open_connection(
        "127.0.0.1", free_port, ssl=client_context(), server_hostname="a.test"
    )
    try:
        assert fingerprint(writer) == renewed["a.test"].fingerprint
    finally:
        writer.close()
    assert (await get(free_port, "a.test", http2=True)).status_code == 200


async def test_plain_text_and_failed_handshakes_are_closed_and_counted(
    tls_gateway, free_port: int
) -> None:
    _, metrics = tls_gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
    writer.write(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing answered
    writer.close()
    untrusting = ssl.create_default_context()  # does not trust our CA: the client aborts
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection(
            "127.0.0.1", free_port, ssl=untrusting, server_hostname="a.test"
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    while metrics.export_state()["refused"].get("tls_handshake", 0) < 2:
        assert loop.time() < deadline, metrics.export_state()["refused"]
        await asyncio.sleep(0.01)  # the server learns of the failure on its next read
    # The listener keeps serving.
    assert (await get(free_port, "a.test", http2=False)).status_code == 200
