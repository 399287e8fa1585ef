"""TLS to upstreams through the gateway: BackendTLSPolicy from YAML to a verified handshake.

Real sockets on loopback: an HTTPS echo backend (which records the SNI of every handshake) and a
grpcio server on a secure port, certificates from throwaway CAs, clients that are real clients
(httpx over HTTP/1.1 and h2c, grpcio). Failures are checked where a user sees them: the status
and body, the access log's ``upstream_failure`` and the connect-failure metric.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import grpc
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo.echo import EchoServer
from gateway.observability.access_log import AccessLog
from gateway.observability.metrics import IstioMetrics
from gateway.observability.telemetry import GatewayTelemetry
from gateway.proxy.options import ProxyOptions
from gateway.snapshot import SnapshotHolder
from tests.conftest import GatewayFactory
from tests.fixtures.backend_tls import (
    TlsEcho,
    config_map_yaml,
    policy_yaml,
    start_tls_echo,
    tls_service_yaml,
)
from tests.fixtures.certs import Authority, Leaf, authority
from tests.fixtures.echo_process import gateway_yaml
from tests.fixtures.grpc_config import grpc_route_yaml
from tests.fixtures.grpc_peers import EchoServicer, echo_stubs, start_grpc_server
from tests.fixtures.proxy import holder_from_yaml, start_fixed_server

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)

ROUTE = """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
    - backendRefs: [{name: echo, port: 443}]
"""


def config(port: int, upstream_port: int, *policies: str) -> str:
    """Gateway on ``port``; every path to Service echo:443 = 127.0.0.1:``upstream_port``;
    ConfigMap ``ca`` holds the test CA; plus ``policies``."""
    return (
        gateway_yaml(port)
        + ROUTE
        + tls_service_yaml("echo", upstream_port)
        + config_map_yaml("ca", authority().pem)
        + "".join(policies)
    )


@dataclass
class Gateway:
    """A gateway serving one config, its metrics and its access-log lines."""

    port: int
    holder: SnapshotHolder
    metrics: IstioMetrics
    caplog: pytest.LogCaptureFixture

    async def get(self, path: str = "/hello", *, http2: bool = False) -> httpx.Response:
        """GET through the gateway: HTTP/1.1, or HTTP/2 with prior knowledge (h2c)."""
        async with httpx.AsyncClient(http1=not http2, http2=http2, timeout=10) as client:
            return await client.get(f"http://127.0.0.1:{self.port}{path}")

    def access_log(self) -> list[dict[str, object]]:
        """The JSON access-log entries written so far."""
        return [
            orjson.loads(r.getMessage()) for r in self.caplog.records if r.name == "test.access"
        ]

    def connect_failures(self) -> dict[tuple[str, str, str], float]:
        """(service, namespace, reason) -> count, from the rendered /metrics text."""
        text = self.metrics.render().decode()
        return {
            (
                s.labels["destination_service_name"],
                s.labels["destination_service_namespace"],
                s.labels["reason"],
            ): s.value
            for family in text_string_to_metric_families(text)
            if family.name == "ambient_gateway_upstream_connect_failures"
            for s in family.samples
            if s.name.endswith("_total")
        }


StartGateway = Callable[..., Awaitable[Gateway]]


@pytest.fixture
def start_gateway(
    gateway_factory: GatewayFactory, free_port: int, caplog: pytest.LogCaptureFixture
) -> StartGateway:
    """Serve a config with metrics and a JSON access log on the ``test.access`` logger."""
    caplog.set_level(logging.INFO, logger="test.access")

    async def start(text: str, options: ProxyOptions | None = None) -> Gateway:
        holder = holder_from_yaml(text)
        metrics = IstioMetrics()
        access_log = AccessLog("json", logging.getLogger("test.access"))
        telemetry = GatewayTelemetry(metrics, access_log=access_log)
        await gateway_factory(holder, options, telemetry)
        return Gateway(free_port, holder, metrics, caplog)

    return start


@pytest.fixture
async def tls_echo() -> Callable[[Leaf], Awaitable[TlsEcho]]:
    """Start HTTPS echo backends serving a given leaf; all are closed after the test."""
    started: list[TlsEcho] = []

    async def start(leaf: Leaf) -> TlsEcho:
        server = await start_tls_echo(leaf)
        started.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in started:
        await server.close()


async def test_https_upstream_verified_with_a_config_map_ca(
    start_gateway: StartGateway, tls_echo, free_port: int
) -> None:
    upstream = await tls_echo(authority().issue("echo.test"))
    gateway = await start_gateway(
        config(free_port, upstream.port, policy_yaml("echo-tls", "echo", "echo.test"))
    )
    for http2, version in ((False, "HTTP/1.1"), (True, "HTTP/2")):
        response = await gateway.get("/hello", http2=http2)
        assert response.status_code == 200, response.text
        assert response.http_version == version
        seen = response.json()
        assert (seen["backend"], seen["path"]) == ("tls-echo", "/hello")
    # Every connection to the upstream was TLS with the policy's hostname as SNI.
    assert upstream.server_names and set(upstream.server_names) == {"echo.test"}
    assert upstream.echo.stats.requests == 2
    assert [e["upstream_failure"] for e in gateway.access_log()] == [None, None]


@pytest.mark.parametrize(
    ("leaf", "problem"),
    [
        (
            lambda: authority().issue("other.test"),
            "certificate verify failed: Hostname mismatch, certificate is not valid for "
            "'echo.test'",
        ),
        (
            lambda: Authority("Unknown CA").issue("echo.test"),
            "certificate verify failed: unable to get local issuer certificate",
        ),
        (
            lambda: authority().issue(
                "echo.test", not_before=timedelta(days=-10), not_after=timedelta(days=-1)
            ),
            "certificate verify failed: certificate has expired",
        ),
    ],
    ids=["wrong-name", "unknown-ca", "expired"],
)
async def test_a_certificate_that_does_not_verify_answers_503(
    start_gateway: StartGateway,
    tls_echo,
    free_port: int,
    leaf: Callable[[], Leaf],
    problem: str,
) -> None:
    upstream = await tls_echo(leaf())
    gateway = await start_gateway(
        config(free_port, upstream.port, policy_yaml("echo-tls", "echo", "echo.test"))
    )
    response = await gateway.get()
    assert response.status_code == 503
    assert f"TLS to 127.0.0.1:{upstream.port} (SNI echo.test): {problem}" in response.text
    assert upstream.echo.stats.requests == 0  # nothing went over the unverified connection
    (entry,) = gateway.access_log()
    assert (entry["status"], entry["response_flags"]) == (503, "UF")
    assert entry["upstream_failure"] == "tls_verify"
    assert gateway.connect_failures() == {("echo", "default", "tls_verify"): 1.0}


async def test_uri_subject_alt_name_matched_and_mismatched(
    start_gateway: StartGateway, tls_echo, free_port: int
) -> None:
    spiffe = "spiffe://cluster.local/ns/default/sa/echo"
    # The certificate does not carry the policy's hostname: only the SAN list is checked.
    upstream = await tls_echo(authority().issue("pod-7.internal", uris=(spiffe,)))
    matched = policy_yaml("echo-tls", "echo", "echo.test", sans=(("URI", spiffe),))
    gateway = await start_gateway(config(free_port, upstream.port, matched))
    response = await gateway.get()
    assert response.status_code == 200, response.text
    assert upstream.server_names == ["echo.test"]  # the hostname is still the SNI

    other = "spiffe://cluster.local/ns/default/sa/other"
    mismatched = policy_yaml("echo-tls", "echo", "echo.test", sans=(("URI", other),))
    gateway.holder.current = holder_from_yaml(config(free_port, upstream.port, mismatched)).current
    response = await gateway.get()
    assert response.status_code == 503
    assert f"no subjectAltName matches URI {other}" in response.text
    assert f"the certificate has DNS:pod-7.internal, URI:{spiffe}" in response.text
    assert upstream.echo.stats.requests == 1
    assert [e["upstream_failure"] for e in gateway.access_log()] == [None, "tls_verify"]
    assert gateway.connect_failures() == {("echo", "default", "tls_verify"): 1.0}


async def test_a_cleartext_upstream_fails_the_handshake(
    start_gateway: StartGateway, echo: EchoServer, free_port: int
) -> None:
    gateway = await start_gateway(
        config(free_port, echo.port, policy_yaml("echo-tls", "echo", "echo.test"))
    )
    response = await gateway.get()
    assert response.status_code == 503
    assert "(SNI echo.test): handshake failed" in response.text
    assert echo.stats.requests == 0
    assert [e["upstream_failure"] for e in gateway.access_log()] == ["tls_handshake"]
    assert gateway.connect_failures() == {("echo", "default", "tls_handshake"): 1.0}


async def test_a_handshake_that_never_completes_is_bounded_by_the_connect_timeout(
    start_gateway: StartGateway, free_port: int
) -> None:
    silent = await start_fixed_server(None)  # accepts, reads, never answers the ClientHello
    try:
        silent_port = silent.sockets[0].getsockname()[1]
        gateway = await start_gateway(
            config(free_port, silent_port, policy_yaml("echo-tls", "echo", "echo.test")),
            ProxyOptions(connect_timeout=0.3),
        )
        response = await gateway.get()
    finally:
        silent.close()
    assert response.status_code == 503
    assert "upstream connect error: connect timeout" in response.text
    (entry,) = gateway.access_log()
    assert entry["upstream_failure"] == "connect_timeout"
    assert 300 <= entry["duration_ms"] < 5000  # the connect timeout, not the 60 s TLS default


async def test_an_invalid_policy_never_falls_back_to_cleartext(
    start_gateway: StartGateway, echo: EchoServer, free_port: int
) -> None:
    # The Service's endpoint speaks cleartext HTTP; its policy's CA reference is missing.
    gateway = await start_gateway(
        config(free_port, echo.port, policy_yaml("echo-tls", "echo", "echo.test", ca="missing"))
    )
    response = await gateway.get()
    assert response.status_code == 500  # the spec's answer for an invalid backendRef
    assert "BackendTLSPolicy default/echo-tls targets Service default/echo" in response.text
    assert "NoValidCACertificate" in response.text
    assert echo.stats.connections == 0


async def test_reload_with_a_policy_switches_the_service_to_tls(
    start_gateway: StartGateway, tls_echo, free_port: int
) -> None:
    upstream = await tls_echo(authority().issue("echo.test"))
    gateway = await start_gateway(config(free_port, upstream.port))
    before = await gateway.get()
    assert before.status_code == 502  # cleartext HTTP to a TLS port: the upstream hangs up
    assert upstream.server_names == []  # no TLS handshake was attempted

    with_policy = config(free_port, upstream.port, policy_yaml("echo-tls", "echo", "echo.test"))
    gateway.holder.current = holder_from_yaml(with_policy, version=2).current
    after = await gateway.get()
    assert after.status_code == 200, after.text
    assert upstream.server_names == ["echo.test"]


GRPC_ROUTE = "---\n" + grpc_route_yaml(
    "echo-grpc",
    """
    - matches: [{method: {service: echo.Echo}}]
      backendRefs: [{name: echo-grpc, port: 443}]
    """,
)


@pytest.fixture
def secure_grpc() -> Iterator[tuple[EchoServicer, int]]:
    """A grpcio echo server on a TLS port, its certificate for grpc.test."""
    servicer = EchoServicer()
    server, port = start_grpc_server(servicer, tls=authority().issue("grpc.test"))
    yield servicer, port
    server.stop(None)


async def test_grpc_over_tls_through_a_grpc_route(
    start_gateway: StartGateway, secure_grpc: tuple[EchoServicer, int], free_port: int
) -> None:
    servicer, grpc_port = secure_grpc
    text = (
        gateway_yaml(free_port)
        + GRPC_ROUTE
        + tls_service_yaml("echo-grpc", grpc_port, app_protocol="grpc")
        + config_map_yaml("ca", authority().pem)
        + policy_yaml("grpc-tls", "echo-grpc", "grpc.test")
    )
    gateway = await start_gateway(text)
    (endpoint,) = gateway.holder.current.dump["routes"][0]["rules"][0]["backends"][0]["backend"][
        "endpoints"
    ]
    assert endpoint["protocol"] == "h2"  # HTTP/2 over TLS, ALPN h2
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port}") as channel:
        stubs = echo_stubs(channel)
        call = stubs.unary(b"over tls", metadata=(("x-tag", "t1"),))
        assert await call == b"over tls"
        assert dict(await call.trailing_metadata())["x-trailer"] == "yes"
        replies = [m async for m in stubs.server_stream(b"s", metadata=(("x-count", "4"),))]
        assert replies == [b"s"] * 4
    assert len(servicer.peers) == 1  # both calls on one multiplexed TLS connection
    assert [e["upstream_failure"] for e in gateway.access_log()] == [None, None]
