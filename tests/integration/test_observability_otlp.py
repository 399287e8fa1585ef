"""Spans leave the process over OTLP/HTTP (protobuf) when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.observability.telemetry import build_telemetry
from tests.fixtures.records import StaticBackend, make_head, make_record

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


class Collector(ThreadingHTTPServer):
    """A stand-in OTLP/HTTP collector that keeps every POST."""

    received: list[tuple[str, str, bytes]]


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.server.received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A collector on a free loopback port."""
    server = Collector(("127.0.0.1", 0), _Handler)
    server.received = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_sampled_span_is_exported_over_otlp_http(collector: Collector) -> None:
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    telemetry = build_telemetry(
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SERVICE_NAME": "gw-test"}
    )
    head = make_head("GET", "/hello", [("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01")])
    telemetry.finish(telemetry.start(head), make_record(head, backend=StaticBackend()))
    telemetry.close()  # flushes the BatchSpanProcessor

    assert len(collector.received) == 1
    path, content_type, body = collector.received[0]
    assert path == "/v1/traces"
    assert content_type == "application/x-protobuf"
    request = ExportTraceServiceRequest.FromString(body)
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "gw-test"
    (span,) = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == "00f067aa0ba902b7"
    assert span.name == "GET default/echo-route"
