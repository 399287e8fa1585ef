"""gRPC through the gateway: a real grpcio client, GRPCRoute, an h2c upstream grpcio server.

The client speaks h2c with prior knowledge to the gateway's plain listener; the Service port
says ``appProtocol: grpc`` so the gateway speaks h2c upstream. Unary and the three streaming
shapes, metadata and trailers, deadlines, and the gateway's own UNIMPLEMENTED / UNAVAILABLE.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.metrics import IstioMetrics
from gateway.observability.telemetry import GatewayTelemetry
from tests.fixtures.grpc_config import grpc_route_yaml
from tests.fixtures.grpc_peers import EchoServicer, echo_stubs, start_grpc_server
from tests.fixtures.proxy import holder_from_yaml, wait_for

ROUTES = "---\n" + grpc_route_yaml(
    "echo",
    """
    - matches: [{method: {service: echo.Echo}}]
      backendRefs: [{name: echo, port: 80}]
    - matches: [{method: {service: echo.Nowhere}}]
      backendRefs: [{name: nowhere, port: 80}]
    """,
)


def config(port: int, grpc_port: int) -> str:
    """Listener ``port``; echo.Echo to the grpcio server, echo.Nowhere to a Service with no
    endpoints (the Service port says appProtocol grpc: the gateway speaks h2c to it)."""
    return (
        f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports: [{{name: grpc, port: 80, targetPort: {grpc_port}, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-1
  namespace: default
  labels: {{kubernetes.io/service-name: echo}}
addressType: IPv4
ports: [{{name: grpc, port: {grpc_port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: nowhere, namespace: default}}
spec:
  ports: [{{name: grpc, port: 80, appProtocol: grpc}}]
"""
        + ROUTES
    )


@pytest.fixture
def servicer() -> Iterator[tuple[EchoServicer, int]]:
    servicer = EchoServicer()
    server, port = start_grpc_server(servicer)
    yield servicer, port
    server.stop(None)


@pytest.fixture
async def channel(
    servicer: tuple[EchoServicer, int], gateway_factory, free_port: int
) -> AsyncIterator[grpc.aio.Channel]:
    metrics = IstioMetrics()
    await gateway_factory(
        holder_from_yaml(config(free_port, servicer[1])), telemetry=GatewayTelemetry(metrics)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port}") as channel:
        channel.metrics = metrics  # type: ignore[attr-defined]
        yield channel


async def test_unary_keeps_metadata_trailers_and_deadline(channel: grpc.aio.Channel) -> None:
    call = echo_stubs(channel).unary(b"hello", metadata=(("x-tag", "t1"),), timeout=7.0)
    assert await call == b"hello"
    assert ("x-tag", "t1") in tuple(await call.initial_metadata())
    trailers = dict(await call.trailing_metadata())
    assert trailers["x-trailer"] == "yes"
    # The grpc-timeout the client sent reached the server: it saw a deadline of about 7 s, not
    # none (grpcio's server timer may round a few ms up).
    assert 0 < int(trailers["x-deadline-ms"]) <= 7100
    assert await call.code() == grpc.StatusCode.OK


async def test_server_error_status_passes_through(channel: grpc.aio.Channel) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await echo_stubs(channel).unary(b"fail")
    assert failure.value.code() == grpc.StatusCode.NOT_FOUND
    assert failure.value.details() == "no echo for 'fail'"


async def test_streaming_shapes(channel: grpc.aio.Channel) -> None:
    stubs = echo_stubs(channel)
    replies = [m async for m in stubs.server_stream(b"s", metadata=(("x-count", "5"),))]
    assert replies == [b"s"] * 5
    assert await stubs.client_stream(iter([b"a", b"b", b"c"])) == b"abc"
    bidi = stubs.bidi()
    for i in range(20):  # each message comes back before the next is sent
        message = f"m{i}".encode() * (i * 50 + 1)
        await bidi.write(message)
        assert await bidi.read() == message
    await bidi.done_writing()
    assert await bidi.read() == grpc.aio.EOF
    assert await bidi.code() == grpc.StatusCode.OK


async def test_no_route_is_unimplemented_and_no_endpoint_is_unavailable(
    channel: grpc.aio.Channel,
) -> None:
    unknown = channel.unary_unary("/echo.Other/Unary")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await unknown(b"x")
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "no route" in failure.value.details()
    nowhere = channel.unary_unary("/echo.Nowhere/Unary")
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await nowhere(b"x")
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no healthy upstream" in failure.value.details()


async def test_metrics_label_grpc_status(channel: grpc.aio.Channel) -> None:
    stubs = echo_stubs(channel)
    await stubs.unary(b"ok")
    with pytest.raises(grpc.aio.AioRpcError):
        await stubs.unary(b"fail")
    text = channel.metrics.render().decode()  # type: ignore[attr-defined]
    seen = {
        (s.labels["request_protocol"], s.labels["grpc_response_status"]): s.value
        for family in text_string_to_metric_families(text)
        if family.name == "istio_requests"
        for s in family.samples
        if s.name == "istio_requests_total"
    }
    assert seen[("grpc", "0")] == 1
    assert seen[("grpc", "5")] == 1


async def test_streams_share_one_upstream_connection(
    channel: grpc.aio.Channel, servicer: tuple[EchoServicer, int]
) -> None:
    stubs = echo_stubs(channel)
    for i in range(30):
        assert await stubs.unary(b"%d" % i) == b"%d" % i
    assert len(servicer[0].peers) == 1  # one multiplexed h2c connection from the gateway


async def test_http11_client_to_h2c_upstream(channel: grpc.aio.Channel, free_port: int) -> None:
    """An HTTP/1.1 client's POST is carried to the h2c upstream and its answer back: a framed
    gRPC message in and out (``te: trailers`` passes, as gRPC servers require it)."""
    async with httpx.AsyncClient(timeout=5) as client:
        response = await client.post(
            f"http://127.0.0.1:{free_port}/echo.Echo/Unary",
            headers={"content-type": "application/grpc", "te": "trailers"},
            content=b"\x00\x00\x00\x00\x02hi",
        )
    assert response.http_version == "HTTP/1.1"
    assert response.status_code == 200
    assert response.content == b"\x00\x00\x00\x00\x02hi"  # the framed echo came back


async def test_request_mirror_copies_calls_to_an_h2c_backend(
    servicer: tuple[EchoServicer, int], gateway_factory, free_port: int
) -> None:
    """GRPCRoute RequestMirror: the copy goes to a second gRPC server over h2c; the client only
    sees the main backend's answer."""
    shadow = EchoServicer()
    shadow_server, shadow_port = start_grpc_server(shadow)
    mirror_yaml = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {free_port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports: [{{name: grpc, port: 80, targetPort: {servicer[1]}, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: grpc, port: {servicer[1]}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: shadow, namespace: default}}
spec:
  ports: [{{name: grpc, port: 80, targetPort: {shadow_port}, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: shadow-1, namespace: default, labels: {{kubernetes.io/service-name: shadow}}}}
addressType: IPv4
ports: [{{name: grpc, port: {shadow_port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
"""
    mirror_yaml += grpc_route_yaml(
        "mirrored",
        """
        - matches: [{method: {service: echo.Echo}}]
          filters:
            - type: RequestMirror
              requestMirror: {backendRef: {name: shadow, port: 80}}
          backendRefs: [{name: echo, port: 80}]
        """,
    )
    try:
        await gateway_factory(holder_from_yaml(mirror_yaml))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port}") as channel:
            assert await echo_stubs(channel).unary(b"copy me") == b"copy me"
            await wait_for(lambda: len(shadow.peers) == 1, timeout=5)
        assert len(servicer[0].peers) == 1
    finally:
        shadow_server.stop(None)


async def test_route_timeout_is_deadline_exceeded(
    servicer: tuple[EchoServicer, int], gateway_factory, free_port: int
) -> None:
    """An HTTPRoute timeout on a gRPC path: the gateway's 504 reaches the client as a gRPC
    DEADLINE_EXCEEDED status (the bidi call waits for a message the client never sends)."""
    route = """---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: slow, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /echo.Echo/Bidi}}]
      timeouts: {request: 300ms}
      backendRefs: [{name: echo, port: 80}]
"""
    config_text = config(free_port, servicer[1]).replace(ROUTES, "") + route
    await gateway_factory(holder_from_yaml(config_text))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{free_port}") as channel:
        call = echo_stubs(channel).bidi()
        assert await call.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert "timeout" in await call.details()
