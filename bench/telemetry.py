"""Telemetry cost per request: ``GatewayTelemetry.start``/``finish`` against prometheus_client.

Run ``python -m bench.telemetry``. Prints ns per call for our metrics-only finish(), start() with
and without an incoming traceparent (tracing sampled off), the whole start+finish pair, a sampled
request with a real SDK span, and two references measured in the same run: one
``Counter.labels(...).inc()`` plus one ``Histogram.labels(...).observe()`` with Istio's 25 labels
(the cheapest way to do a third of our work with prometheus_client directly), and an empty call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry, Counter, Histogram

from gateway.backends.base import Destination, Endpoint
from gateway.observability.metrics import DURATION_BUCKETS, LABEL_NAMES, IstioMetrics
from gateway.observability.record import RequestRecord
from gateway.observability.telemetry import GatewayTelemetry
from gateway.observability.tracing import Tracer
from gateway.request import RequestHead
from gateway.snapshot import CompiledRule, RouteRef

BATCH = 10_000
ROUNDS = 20
UNSAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class _Backend:
    destination = Destination("echo", "default", "echo.default.svc.cluster.local")


class _Discard(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _discarding_provider() -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard(), max_queue_size=100_000))
    return provider


def _head(traceparent: str | None) -> RequestHead:
    headers = [("host", "echo.example.com"), ("user-agent", "bench")]
    if traceparent:
        headers.append(("traceparent", traceparent))
    return RequestHead("GET", "/echo", "", "echo.example.com", headers, client_ip="127.0.0.1")


def _record(head: RequestHead) -> RequestRecord:
    now = time.perf_counter()
    record = RequestRecord(head, now - 0.0042, "req-1")
    record.end = now
    record.rule = CompiledRule(RouteRef("HTTPRoute", "default", "echo", 0))
    record.backend = _Backend()  # type: ignore[assignment]
    record.endpoint = Endpoint("127.0.0.1", 8080)
    record.status = 200
    record.response_bytes = 1024
    return record


def measure(cases: dict[str, tuple[Callable[[], object], int]]) -> dict[str, float]:
    """Best ns per call of each case; rounds interleave the cases, so drift hits all alike."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(ROUNDS):
        for name, (fn, batch) in cases.items():
            t0 = time.perf_counter_ns()
            for _ in range(batch):
                fn()
            best[name] = min(best[name], (time.perf_counter_ns() - t0) / batch)
    return best


def main() -> None:
    """Measure and print the figures."""
    telemetry = GatewayTelemetry(IstioMetrics(), Tracer(None))
    metrics = telemetry.metrics
    head, bare_head, sampled_head = _head(UNSAMPLED), _head(None), _head(SAMPLED)
    record = _record(head)
    trace = telemetry.start(head)
    sampled = GatewayTelemetry(IstioMetrics(), Tracer(_discarding_provider()))

    registry = CollectorRegistry()
    counter = Counter("ref_requests", "reference", LABEL_NAMES, registry=registry)
    histogram = Histogram(
        "ref_duration_ms", "reference", LABEL_NAMES, buckets=DURATION_BUCKETS, registry=registry
    )
    values = metrics.labels_for(_Backend.destination, 200, "-", "http")

    def reference() -> None:
        counter.labels(*values).inc()
        histogram.labels(*values).observe(4.2)

    cases: dict[str, tuple[Callable[[], object], int]] = {
        "metrics.observe()": (lambda: metrics.observe(record), BATCH),
        "finish(), metrics only, tracing off": (lambda: telemetry.finish(trace, record), BATCH),
        "start(), incoming traceparent, unsampled": (lambda: telemetry.start(head), BATCH),
        "start(), no traceparent, unsampled": (lambda: telemetry.start(bare_head), BATCH),
        "start() + finish(), unsampled": (
            lambda: telemetry.finish(telemetry.start(head), record),
            BATCH,
        ),
        "start() + finish(), sampled SDK span, batch export": (
            lambda: sampled.finish(sampled.start(sampled_head), record),
            BATCH // 20,
        ),
        "reference: Counter.inc + Histogram.observe, 25 labels": (reference, BATCH),
        "reference: an empty call": (lambda: None, BATCH),
    }
    results = measure(cases)
    sampled.close()

    targets = {
        "finish(), metrics only, tracing off": "target <= 3000",
        "start(), incoming traceparent, unsampled": "target ~1000",
    }
    for name, ns in results.items():
        print(f"{name:55s} {ns:8.0f} ns  {targets.get(name, '')}")
    ratio = (
        results["finish(), metrics only, tracing off"]
        / results["reference: Counter.inc + Histogram.observe, 25 labels"]
    )
    print(f"{'finish() / prometheus_client reference':55s} {ratio:8.2f}x")


if __name__ == "__main__":
    main()
