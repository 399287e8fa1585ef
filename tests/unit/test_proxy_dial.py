"""Naming and counting failed upstream dials (the access log's and the metric's reason)."""

from __future__ import annotations

import ssl

import pytest

from gateway.observability.metrics import IstioMetrics
from gateway.observability.propagation import NoopTelemetry
from gateway.observability.telemetry import GatewayTelemetry
from gateway.proxy.dial import failure_reason, upstream_failed
from gateway.tls.upstream import UpstreamHandshakeError, UpstreamTlsError
from tests.fixtures.records import StaticBackend


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (UpstreamTlsError("no subjectAltName matches"), "tls_verify"),
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls_verify"),
        (UpstreamHandshakeError("wrong version number"), "tls_handshake"),
        (ssl.SSLError(1, "handshake failure"), "tls_handshake"),
        (ConnectionRefusedError(111, "refused"), "connect_refused"),
        (TimeoutError("connect timeout"), "connect_timeout"),
        (ConnectionResetError(104, "reset"), "connect_error"),
        (OSError(113, "no route to host"), "connect_error"),
        (None, "connect_error"),
    ],
)
def test_failure_reason(error: BaseException | None, reason: str) -> None:
    assert failure_reason(error) == reason


def test_upstream_failed_counts_per_destination_and_reason() -> None:
    metrics = IstioMetrics()
    telemetry = GatewayTelemetry(metrics)
    echo = StaticBackend("echo", "apps")
    assert upstream_failed(telemetry, echo, UpstreamTlsError("x")) == "tls_verify"
    assert upstream_failed(telemetry, echo, UpstreamTlsError("y")) == "tls_verify"
    assert upstream_failed(telemetry, None, ConnectionRefusedError()) == "connect_refused"
    assert sorted(metrics.export_state()["upstream_connect_failures"]) == [
        ["echo", "apps", "tls_verify", 2],
        ["unknown", "unknown", "connect_refused", 1],
    ]


def test_upstream_failed_without_metrics_only_names_the_reason() -> None:
    assert upstream_failed(NoopTelemetry(), StaticBackend(), TimeoutError()) == "connect_timeout"
