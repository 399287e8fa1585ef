"""Telemetry through the real data path: YAML, snapshot, proxy, then metrics, spans, admin API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from gateway.admin import AdminServer, create_admin_app, serve_admin
from gateway.demo.echo import EchoServer
from gateway.observability.access_log import AccessLog
from gateway.observability.metrics import IstioMetrics
from gateway.observability.telemetry import GatewayTelemetry
from gateway.observability.tracing import Tracer
from gateway.reload import build_snapshot
from gateway.snapshot import SnapshotHolder
from tests.conftest import GatewayFactory
from tests.fixtures.echo_process import gateway_yaml, route_yaml, service_yaml

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@dataclass
class Stack:
    """A gateway on ``port`` with in-memory spans, a captured access log and its admin API."""

    port: int
    telemetry: GatewayTelemetry
    spans: InMemorySpanExporter
    admin: httpx.AsyncClient


@pytest.fixture
async def stack(
    tmp_path: Path,
    echo: EchoServer,
    gateway_factory: GatewayFactory,
    free_port: int,
    caplog: pytest.LogCaptureFixture,
) -> AsyncIterator[Stack]:
    """Compile a YAML config routing /api to Service ``echo`` and serve it with our telemetry."""
    config = tmp_path / "routes.yaml"
    config.write_text(
        gateway_yaml(free_port)
        + service_yaml("echo", echo.port)
        + route_yaml("api", "echo", "/api")
    )
    holder = SnapshotHolder(build_snapshot([str(config)], version=1))
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    caplog.set_level(logging.INFO, logger="test.e2e.access")
    telemetry = GatewayTelemetry(
        IstioMetrics(), Tracer(provider), AccessLog("json", logging.getLogger("test.e2e.access"))
    )
    await gateway_factory(holder, telemetry=telemetry)
    admin_server: AdminServer = await serve_admin(
        create_admin_app(holder, telemetry.metrics.render, lambda: True), "127.0.0.1", 0
    )
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{admin_server.port}", timeout=10
    ) as admin:
        yield Stack(free_port, telemetry, spans, admin)
    await admin_server.close()
    telemetry.close()


async def test_request_is_counted_traced_and_logged(
    stack: Stack, echo: EchoServer, caplog: pytest.LogCaptureFixture
) -> None:
    incoming = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.port}", timeout=5) as client:
        response = await client.get("/api/items", headers={"traceparent": incoming})
        missing = await client.get("/elsewhere")
    assert response.status_code == 200
    assert missing.status_code == 404

    forwarded = response.json()["headers"]["traceparent"]
    spans = {s.name: s for s in stack.spans.get_finished_spans()}
    assert set(spans) == {"GET default/api", "GET"}  # the 404 matched no route
    span = spans["GET default/api"]
    assert span.kind is SpanKind.SERVER
    assert span.context is not None and span.parent is not None
    assert forwarded == f"00-{TRACE_ID}-{span.context.span_id:016x}-01"
    assert f"{span.parent.span_id:016x}" == "00f067aa0ba902b7"
    assert (span.attributes or {})["http.response.status_code"] == 200

    families = {
        f.name: f for f in text_string_to_metric_families((await stack.admin.get("/metrics")).text)
    }
    codes = {
        (
            s.labels["response_code"],
            s.labels["destination_service_name"],
            s.labels["response_flags"],
        )
        for s in families["istio_requests"].samples
        if s.name == "istio_requests_total" and s.value == 1
    }
    assert codes == {("200", "echo", "-"), ("404", "unknown", "NR")}

    entries = [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "test.e2e.access"]
    assert [(e["path"], e["status"]) for e in entries] == [("/api/items", 200), ("/elsewhere", 404)]
    assert entries[0]["trace_id"] == TRACE_ID
    assert entries[0]["upstream"] == f"127.0.0.1:{echo.port}"
    assert entries[1]["response_flags"] == "NR"


async def test_routes_and_config_dump_come_from_the_compiled_snapshot(stack: Stack) -> None:
    routes = (await stack.admin.get("/routes")).json()["routes"]
    (api,) = [r for r in routes if r["name"] == "api"]
    assert api["valid"] is True
    types = {c["type"]: c["status"] for p in api["parents"] for c in p["conditions"]}
    assert types["Accepted"] == "True"
    assert types["ResolvedRefs"] == "True"
    dump = (await stack.admin.get("/config_dump")).json()
    assert dump["version"] == 1
    assert dump["config"]
