"""The data path reports every request to telemetry exactly once, with a filled record."""

from __future__ import annotations

import asyncio

import httpx

from gateway.demo.echo import EchoServer
from gateway.observability.propagation import NoopTrace, continue_traceparent
from gateway.observability.record import RequestRecord
from gateway.request import RequestHead
from tests.fixtures.proxy import StaticBackend, choice, holder, rule, wait_for


class RecordingTelemetry:
    """Keeps what the data path hands over."""

    def __init__(self) -> None:
        self.started: list[RequestHead] = []
        self.finished: list[tuple[NoopTrace, RequestRecord]] = []

    def start(self, head: RequestHead) -> NoopTrace:
        self.started.append(head)
        return NoopTrace(continue_traceparent(head.get("traceparent")))

    def finish(self, trace: NoopTrace, record: RequestRecord) -> None:
        self.finished.append((trace, record))


async def test_records_filled_once_per_request(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    telemetry = RecordingTelemetry()
    backend = StaticBackend("echo", [echo.port])
    the_rule = rule(choice(backend))
    await gateway_factory(holder(free_port, {"/ok": the_rule}), telemetry=telemetry)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as client:
        await client.post("/ok/x", content=b"12345")
        await client.get("/missing")
    assert len(telemetry.started) == len(telemetry.finished) == 2
    (trace, ok), (_, missing) = telemetry.finished
    assert ok.status == 200 and ok.rule is the_rule and ok.backend is backend
    assert ok.endpoint == backend.endpoints[0] and ok.response_flags == "-"
    assert ok.request_bytes == 5 and ok.response_bytes > 0
    assert ok.end > ok.start > 0
    assert len(ok.request_id) == 32
    trace_id = trace.traceparent.split("-")[1]
    forwarded = echo.stats.recent[0]["headers"]["traceparent"]
    assert forwarded == trace.traceparent and trace_id != "0" * 32
    assert missing.status == 404 and missing.response_flags == "NR" and missing.rule is None


async def test_client_disconnect_recorded_as_dc(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    telemetry = RecordingTelemetry()
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))}),
        telemetry=telemetry,
    )
    _reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
    writer.write(b"GET /wait?delay_ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
    await wait_for(lambda: echo.stats.requests == 1)
    writer.close()
    await wait_for(lambda: len(telemetry.finished) == 1)
    record = telemetry.finished[0][1]
    assert record.response_flags == "DC" and record.status == 499


def test_traceparent_continues_valid_and_replaces_invalid() -> None:
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    out = continue_traceparent(incoming)
    assert out.startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-") and out.endswith("-01")
    assert out.split("-")[2] != "00f067aa0ba902b7"
    for bad in (
        None,
        "garbage",
        "00-" + "0" * 32 + "-00f067aa0ba902b7-01",
        "ff-" + "a" * 32 + "-" + "b" * 16 + "-01",
    ):
        version, trace, span, _flags = continue_traceparent(bad).split("-")
        assert version == "00" and len(trace) == 32 and len(span) == 16 and trace != "0" * 32
