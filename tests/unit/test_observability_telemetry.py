"""GatewayTelemetry composes metrics, tracing and the access log, and never fails a request."""

from __future__ import annotations

import logging

import pytest

from gateway.backends.base import Endpoint
from gateway.observability.metrics import IstioMetrics
from gateway.observability.telemetry import GatewayTelemetry, build_telemetry
from tests.fixtures.records import make_head, make_record


class BrokenBackend:
    """A backend whose destination cannot be read."""

    @property
    def destination(self) -> object:
        raise RuntimeError("boom")

    def pick(self, head: object, tried: tuple[Endpoint, ...] = ()) -> None:
        return None

    def release(self, endpoint: Endpoint, ok: bool) -> None:
        return None

    def describe(self) -> dict[str, str]:
        return {}


def test_finish_logs_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    telemetry = GatewayTelemetry(IstioMetrics())
    record = make_record()
    record.backend = BrokenBackend()  # type: ignore[assignment]
    with caplog.at_level(logging.ERROR):
        telemetry.finish(telemetry.start(make_head()), record)
    assert "telemetry finish failed for request req-42" in caplog.text


def test_build_telemetry_without_otel_env_propagates_but_records_no_spans() -> None:
    telemetry = build_telemetry(env={})
    assert telemetry.tracer.provider is None
    trace = telemetry.start(make_head())
    assert trace.traceparent.startswith("00-") and trace.traceparent.endswith("-00")
    telemetry.finish(trace, make_record())
    assert b"istio_requests_total" in telemetry.metrics.render()
