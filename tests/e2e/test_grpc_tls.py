"""gRPC over TLS through ``ambient gateway`` as a user runs it (a subprocess on uvloop).

An HTTPS listener with its certificate in a Secret, a GRPCRoute, an h2c grpcio backend; a grpcio
client on a secure channel that verifies the certificate. Unary and bidirectional calls, the
gateway's own UNIMPLEMENTED, and the metrics the admin API serves afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.certs import authority, secret_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.grpc_config import grpc_route_yaml
from tests.fixtures.grpc_peers import EchoServicer, echo_stubs, start_grpc_server


@pytest.fixture(scope="module")
def backend() -> Iterator[int]:
    server, port = start_grpc_server(EchoServicer())
    yield port
    server.stop(None)


@pytest.fixture(scope="module")
def gateway(backend: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, str]]:
    port = free_port()
    leaf = authority().issue("grpc.example.test")
    config = f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners:
    - {{name: tls, port: {port}, protocol: HTTPS, hostname: grpc.example.test,
        tls: {{certificateRefs: [{{name: grpc-cert}}]}}}}
---
{secret_yaml("grpc-cert", leaf)}---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: default}}
spec:
  ports: [{{name: grpc, port: 80, targetPort: {backend}, appProtocol: grpc}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: echo-1, namespace: default, labels: {{kubernetes.io/service-name: echo}}}}
addressType: IPv4
ports: [{{name: grpc, port: {backend}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
---
"""
    config += grpc_route_yaml(
        "echo",
        """
        - matches: [{method: {service: echo.Echo}}]
          backendRefs: [{name: echo, port: 80}]
        """,
    )
    path = Path(tmp_path_factory.mktemp("grpc-tls")) / "routes.yaml"
    path.write_text(config)
    process = GatewayProcess([path])
    try:
        process.wait_ready()
        yield port, process.admin
    finally:
        process.stop()


@pytest.fixture
def channel(gateway: tuple[int, str]) -> Iterator[grpc.Channel]:
    credentials = grpc.ssl_channel_credentials(root_certificates=authority().pem)
    with grpc.secure_channel(
        f"127.0.0.1:{gateway[0]}",
        credentials,
        options=(("grpc.ssl_target_name_override", "grpc.example.test"),),
    ) as channel:
        yield channel


def test_grpc_calls_over_tls(channel: grpc.Channel, gateway: tuple[int, str]) -> None:
    stubs = echo_stubs(channel)
    reply, call = stubs.unary.with_call(b"over tls", metadata=(("x-k", "v"),), timeout=5)
    assert reply == b"over tls"
    assert ("x-k", "v") in call.initial_metadata()
    assert dict(call.trailing_metadata())["x-trailer"] == "yes"
    messages = [b"one", b"two" * 1000, b"three"]
    assert list(stubs.bidi(iter(messages), timeout=5)) == messages
    with pytest.raises(grpc.RpcError) as failure:
        channel.unary_unary("/nope.Service/Call")(b"x", timeout=5)
    assert failure.value.code() == grpc.StatusCode.UNIMPLEMENTED
    metrics = httpx.get(f"{gateway[1]}/metrics", timeout=5).text
    statuses = {
        s.labels["grpc_response_status"]: s.value
        for family in text_string_to_metric_families(metrics)
        if family.name == "istio_requests"
        for s in family.samples
        if s.name == "istio_requests_total" and s.labels["request_protocol"] == "grpc"
    }
    assert statuses["0"] >= 2 and statuses["12"] == 1
