"""Spans leave the process over OTLP/HTTP (protobuf) when OTEL_EXPORTER_OTLP_ENDPOINT is set."""

from __future__ import annotations

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway.observability.telemetry import build_telemetry
from tests.fixtures.otlp import Collector, collector  # noqa: F401  (fixture)
from tests.fixtures.records import StaticBackend, make_head, make_record

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_sampled_span_is_exported_over_otlp_http(collector: Collector) -> None:  # noqa: F811
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
