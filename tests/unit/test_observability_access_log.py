"""The access log: one JSON (or text) line per request through ``logging``."""

from __future__ import annotations

import logging

import orjson
import pytest

from gateway.observability.access_log import AccessLog
from gateway.observability.metrics import IstioMetrics
from gateway.observability.telemetry import GatewayTelemetry, build_telemetry
from gateway.observability.tracing import Tracer
from tests.fixtures.records import StaticBackend, make_head, make_record

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def access_logger(caplog: pytest.LogCaptureFixture) -> logging.Logger:
    """A dedicated logger captured by caplog."""
    caplog.set_level(logging.INFO, logger="test.access")
    return logging.getLogger("test.access")


def test_json_line_has_the_request_fields(
    access_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    telemetry = GatewayTelemetry(IstioMetrics(), Tracer(None), AccessLog("json", access_logger))
    head = make_head("PUT", "/items/7", [("traceparent", TRACEPARENT)])
    trace = telemetry.start(head)
    record = make_record(
        head, status=502, duration_ms=12.5, request_bytes=30, response_bytes=99,
        backend=StaticBackend(), flags="UF",
    )  # fmt: skip
    telemetry.finish(trace, record)

    (entry,) = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "test.access"]
    assert entry["method"] == "PUT"
    assert entry["path"] == "/items/7"
    assert entry["status"] == 502
    assert entry["duration_ms"] == pytest.approx(12.5)
    assert entry["request_bytes"] == 30
    assert entry["response_bytes"] == 99
    assert entry["upstream"] == "127.0.0.1:8080"
    assert entry["destination"] == "echo.default.svc.cluster.local"
    assert entry["route"] == "default/echo-route/0"
    assert entry["request_id"] == "req-42"
    assert entry["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry["response_flags"] == "UF"
    assert entry["upstream_failure"] is None
    assert entry["time"].endswith("Z")


def test_failed_dial_reason_is_logged(
    access_logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    record = make_record(status=503, backend=StaticBackend(), flags="UF")
    record.upstream_failure = "tls_verify"
    AccessLog("json", access_logger).log(record)
    AccessLog("text", access_logger).log(record)
    json_line, text_line = [r.getMessage() for r in caplog.records if r.name == "test.access"]
    assert orjson.loads(json_line)["upstream_failure"] == "tls_verify"
    assert text_line.endswith(" upstream_failure=tls_verify")


def test_text_line(access_logger: logging.Logger, caplog: pytest.LogCaptureFixture) -> None:
    AccessLog("text", access_logger).log(make_record(route=None, status=404, flags="NR"), "abc")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "test.access"]
    assert '"GET /echo HTTP/1.1" 404 NR' in line
    assert "trace_id=abc" in line
    assert "route=-" in line
    assert "destination=-" in line
    assert line.endswith(" upstream_failure=-")


def test_access_log_is_off_by_default() -> None:
    assert build_telemetry(env={}).access_log is None
    assert build_telemetry(access_log=True, env={}).access_log is not None


def test_unknown_format_is_rejected() -> None:
    with pytest.raises(ValueError, match="json"):
        AccessLog("xml")  # type: ignore[arg-type]
