"""W3C trace context in and out, and the SERVER span exported to the SDK's in-memory exporter."""

from __future__ import annotations

import re

import pytest
from opentelemetry.sdk import trace as sdk_trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind, StatusCode

from gateway.observability.metrics import IstioMetrics
from gateway.observability.telemetry import GatewayTelemetry
from gateway.observability.tracing import (
    Tracer,
    parse_traceparent,
    provider_from_env,
    sampler_from_env,
)
from gateway.waypoint.peer import MeshDestination, MeshPeer
from mesh.identity import SpiffeId
from mesh.state import parse_mesh
from mesh.state.registry import Service
from tests.fixtures.records import StaticBackend, make_head, make_record

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SAMPLED = f"00-{TRACE_ID}-{PARENT_ID}-01"
UNSAMPLED = f"00-{TRACE_ID}-{PARENT_ID}-00"
TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")

ECHO_SERVICE = Service("echo", "default", "10.96.0.10", (), {})


def in_memory(sampler: Sampler | None = None) -> tuple[GatewayTelemetry, InMemorySpanExporter]:
    """Telemetry whose tracer exports synchronously into memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler) if sampler is not None else TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return GatewayTelemetry(IstioMetrics(), Tracer(provider)), exporter


def outgoing(traceparent: str) -> tuple[str, str, str]:
    """The parts of an outgoing traceparent, asserting its format."""
    match = TRACEPARENT.fullmatch(traceparent)
    assert match is not None, traceparent
    trace_id, span_id, flags = match.groups()
    assert trace_id != "0" * 32 and span_id != "0" * 16
    return trace_id, span_id, flags


def only_span(exporter: InMemorySpanExporter) -> ReadableSpan:
    """The single exported span."""
    spans = exporter.get_finished_spans()
    assert len(spans) == 1
    return spans[0]


def test_sampled_request_exports_one_server_span_child_of_the_incoming_traceparent() -> None:
    telemetry, exporter = in_memory()
    head = make_head("POST", "/v1/chat", [("traceparent", SAMPLED), ("tracestate", "vendor=x")])
    trace = telemetry.start(head)
    record = make_record(head, status=201, backend=StaticBackend(), duration_ms=40.0)
    telemetry.finish(trace, record)

    span = only_span(exporter)
    assert span.kind is SpanKind.SERVER
    assert span.context is not None and span.parent is not None
    assert f"{span.context.trace_id:032x}" == TRACE_ID
    assert f"{span.parent.span_id:016x}" == PARENT_ID
    assert span.parent.is_remote
    assert span.context.trace_state.get("vendor") == "x"
    trace_id, span_id, flags = outgoing(trace.traceparent)
    assert (trace_id, flags) == (TRACE_ID, "01")
    assert span_id == f"{span.context.span_id:016x}"
    assert span.name == "POST default/echo-route"
    attributes = span.attributes or {}
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.path"] == "/v1/chat"
    assert attributes["http.response.status_code"] == 201
    assert attributes["http.route"] == "default/echo-route"
    assert attributes["server.address"] == "echo.example.com"
    assert attributes["network.peer.address"] == "10.1.2.3"
    assert attributes["gateway.upstream.address"] == "127.0.0.1:8080"
    assert attributes["gateway.route.namespace"] == "default"
    assert attributes["gateway.route.name"] == "echo-route"
    assert span.status.status_code is StatusCode.UNSET
    assert span.start_time is not None and span.end_time is not None
    assert span.end_time - span.start_time == pytest.approx(40_000_000, abs=1_000)


def test_root_request_starts_a_new_sampled_trace() -> None:
    telemetry, exporter = in_memory()
    trace = telemetry.start(make_head())
    telemetry.finish(trace, make_record(backend=StaticBackend()))

    span = only_span(exporter)
    assert span.parent is None
    trace_id, span_id, flags = outgoing(trace.traceparent)
    assert span.context is not None
    assert trace_id == f"{span.context.trace_id:032x}"
    assert span_id == f"{span.context.span_id:016x}"
    assert int(flags, 16) & 1  # sampled (the SDK may also set the W3C "random" bit)


def test_5xx_marks_the_span_as_an_error() -> None:
    telemetry, exporter = in_memory()
    trace = telemetry.start(make_head(headers=[("traceparent", SAMPLED)]))
    telemetry.finish(trace, make_record(status=503, flags="UH", backend=StaticBackend()))

    span = only_span(exporter)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})["error.type"] == "503"


def test_unsampled_parent_creates_no_span_but_propagates_the_trace() -> None:
    telemetry, exporter = in_memory()  # parentbased_always_on: follows the parent's flag
    trace = telemetry.start(make_head(headers=[("traceparent", UNSAMPLED)]))
    telemetry.finish(trace, make_record(backend=StaticBackend()))

    assert exporter.get_finished_spans() == ()
    trace_id, span_id, flags = outgoing(trace.traceparent)
    assert (trace_id, flags) == (TRACE_ID, "00")
    assert span_id != PARENT_ID


def test_always_off_creates_no_span_and_fresh_ids_without_a_header() -> None:
    telemetry, exporter = in_memory(ALWAYS_OFF)
    first = telemetry.start(make_head())
    second = telemetry.start(make_head())
    telemetry.finish(first, make_record())

    assert exporter.get_finished_spans() == ()
    a, b = outgoing(first.traceparent), outgoing(second.traceparent)
    assert a[2] == "00"
    assert a[0] != b[0]


def test_ratio_sampler_decides_on_the_incoming_trace_id_like_the_sdk() -> None:
    telemetry, exporter = in_memory(
        ParentBased(ALWAYS_OFF, remote_parent_sampled=TraceIdRatioBased(0.5))
    )
    low = f"00-{'0' * 16}{'1' * 16}-{PARENT_ID}-01"  # low 64 bits small: under the bound
    high = f"00-{'0' * 16}{'f' * 16}-{PARENT_ID}-01"
    telemetry.finish(telemetry.start(make_head(headers=[("traceparent", low)])), make_record())
    telemetry.finish(telemetry.start(make_head(headers=[("traceparent", high)])), make_record())

    span = only_span(exporter)
    assert span.context is not None
    assert f"{span.context.trace_id:032x}" == f"{'0' * 16}{'1' * 16}"


def test_without_a_provider_trace_context_still_propagates() -> None:
    tracer = Tracer(None)
    trace = tracer.start(make_head(headers=[("traceparent", SAMPLED)]))
    trace_id, span_id, flags = outgoing(trace.traceparent)
    assert (trace_id, flags) == (TRACE_ID, "01")
    assert span_id != PARENT_ID
    assert trace.span is None


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is forbidden
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",  # upper-case hex
        f"00-{TRACE_ID}-{PARENT_ID}-01-extra",  # version 00 has exactly four fields
    ],
)
def test_invalid_traceparent_starts_a_fresh_trace(value: str) -> None:
    assert parse_traceparent(value) is None
    trace = Tracer(None).start(make_head(headers=[("traceparent", value)]))
    assert outgoing(trace.traceparent)[0] != TRACE_ID


def test_future_version_with_extra_fields_is_accepted() -> None:
    assert parse_traceparent(f"01-{TRACE_ID}-{PARENT_ID}-01-what-ever") == (
        TRACE_ID,
        PARENT_ID,
        "01",
    )


def test_env_configuration() -> None:
    assert (
        provider_from_env({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}) is None
    )
    assert provider_from_env({}) is None  # no endpoint, no exporter: nothing to record
    provider = provider_from_env(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "OTEL_SERVICE_NAME": "edge",
            "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": "0.25",
        }
    )
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "edge"
        assert "TraceIdRatioBased{0.25}" in provider.sampler.get_description()
    finally:
        provider.shutdown()
    always_off = sampler_from_env({"OTEL_TRACES_SAMPLER": "always_off"})
    assert "AlwaysOffSampler" in always_off.get_description()


def test_default_service_name_is_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = provider_from_env({"OTEL_TRACES_EXPORTER": "console"})
    assert provider is not None
    try:
        assert provider.resource.attributes["service.name"] == "ambient-gateway"
    finally:
        provider.shutdown()


class DropEverything(Sampler):
    """A sampler the fast path does not know, so the SDK decides (and drops)."""

    def should_sample(self, *args: object, **kwargs: object) -> SamplingResult:
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "DropEverything"


def test_unknown_sampler_is_left_to_the_sdk_and_its_drop_still_propagates() -> None:
    telemetry, exporter = in_memory(DropEverything())
    trace = telemetry.start(make_head(headers=[("traceparent", SAMPLED)]))
    telemetry.finish(trace, make_record())

    assert exporter.get_finished_spans() == ()
    trace_id, span_id, flags = outgoing(trace.traceparent)
    assert trace_id == TRACE_ID
    assert span_id != PARENT_ID
    assert int(flags, 16) & 1 == 0


def test_a_failing_sdk_never_fails_the_request(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry, exporter = in_memory()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("sdk down")

    monkeypatch.setattr(sdk_trace.Tracer, "start_span", broken)
    trace = telemetry.start(make_head(headers=[("traceparent", SAMPLED)]))
    telemetry.finish(trace, make_record())

    assert outgoing(trace.traceparent)[0] == TRACE_ID
    assert exporter.get_finished_spans() == ()
    assert "starting a span failed" in caplog.text


def test_a_waypoint_span_names_the_peer_identity_and_the_original_destination() -> None:
    telemetry, exporter = in_memory()
    head = make_head("GET", "/hello", [("traceparent", SAMPLED)])
    head.listener_port = (1 << 32) + 7  # a destination's routing key, not a port
    destination = MeshDestination(head.listener_port, ("10.96.0.10", 80), ECHO_SERVICE, "d/w")
    identity = SpiffeId("cluster.local", "default", "sleep")
    head.peer = MeshPeer(identity, "127.0.0.1", None, destination, parse_mesh([]))
    trace = telemetry.start(head)
    telemetry.finish(trace, make_record(head, backend=StaticBackend()))

    attributes = only_span(exporter).attributes or {}
    assert attributes["istio.source.principal"] == "spiffe://cluster.local/ns/default/sa/sleep"
    assert attributes["istio.destination.address"] == "10.96.0.10:80"
    assert attributes["istio.reporter"] == "waypoint"
    assert attributes["server.port"] == 80
    assert outgoing(trace.traceparent)[0] == TRACE_ID
