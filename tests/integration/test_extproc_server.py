"""``ambient epp``'s gRPC server on loopback; the test plays Envoy over a raw grpcio stream."""

from __future__ import annotations

import asyncio
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inference_ext.extproc import messages as pb
from inference_ext.extproc.server import start_server
from tests.fixtures.extproc_peers import (
    CHAT,
    A,
    B,
    C,
    Epp,
    request_body,
    request_headers,
    response_body,
    response_headers,
)
from tests.fixtures.schedulers import RoundRobinScheduler


def destination(response: pb.ProcessingResponse) -> dict[str, str]:
    common = response.request_headers.response
    return {o.header.key: pb.header_value(o.header) for o in common.header_mutation.set_headers}


def refusal(response: pb.ProcessingResponse) -> tuple[int, str]:
    assert response.WhichOneof("response") == "immediate_response"
    answer = response.immediate_response
    return answer.status.code, answer.body.decode()


async def test_body_chunks_then_decision_then_echo_and_outcome(epp: Epp) -> None:
    stream = epp.stream()
    await stream.send(
        request_headers(("x-gateway-inference-objective", "critical"), ("x-request-id", "req-1")),
        request_body(CHAT[:20], end=False),
        request_body(CHAT[20:], end=True),
    )
    decision = await stream.recv()
    assert decision.WhichOneof("response") == "request_headers"
    assert decision.request_headers.response.clear_route_cache
    assert destination(decision) == {
        "x-gateway-destination-endpoint": "10.0.0.1:8000,10.0.0.2:8000",
        "content-length": str(len(CHAT)),
    }
    lb = decision.dynamic_metadata["envoy.lb"]
    assert lb["x-gateway-destination-endpoint"] == "10.0.0.1:8000,10.0.0.2:8000"
    echo = await stream.recv()
    streamed = echo.request_body.response.body_mutation.streamed_response
    assert (streamed.body, streamed.end_of_stream) == (CHAT, True)

    (request,) = epp.scheduler.scheduled
    assert (request.request_id, request.model, request.stream) == ("req-1", "llama", True)
    assert (request.objective, request.priority) == ("critical", 2)
    assert request.headers["content-type"] == "application/json"

    # The response: headers pass (CONTINUE), the body is echoed, the end is reported.
    await stream.send(response_headers(200, served=B))
    assert (await stream.recv()).WhichOneof("response") == "response_headers"
    await stream.send(response_body(b"data: [DONE]\n\n", end=True))
    echoed = (await stream.recv()).response_body.response.body_mutation.streamed_response
    assert (echoed.body, echoed.end_of_stream) == (b"data: [DONE]\n\n", True)
    served_request, endpoint, outcome = await epp.scheduler.next_outcome()
    assert served_request is request
    assert endpoint == B  # what the proxy reported, not the first choice
    assert (outcome.status, outcome.ok, outcome.aborted) == (200, True, False)
    assert outcome.response_bytes == len(b"data: [DONE]\n\n")
    await stream.call.done_writing()
    assert await stream.recv() is grpc.aio.EOF
    assert await stream.call.code() == grpc.StatusCode.OK


async def test_headers_only_request_is_scheduled_at_once(epp: Epp) -> None:
    stream = epp.stream()
    await stream.send(request_headers(end=True))
    decision = await stream.recv()
    assert destination(decision) == {
        "x-gateway-destination-endpoint": "10.0.0.1:8000,10.0.0.2:8000"
    }
    (request,) = epp.scheduler.scheduled
    assert (request.model, request.body_size) == ("", 0)
    # Round robin: the next request starts at B.
    second = epp.stream()
    await second.send(request_headers(end=True))
    assert destination(await second.recv())["x-gateway-destination-endpoint"].startswith(str(B))
    # Envoy closes both streams without a response phase: each outcome is reported, first pick.
    await stream.call.done_writing()
    await second.call.done_writing()
    assert await stream.recv_until_eof() == []
    assert await second.recv_until_eof() == []
    picks = {(await epp.scheduler.next_outcome())[1] for _ in range(2)}
    assert picks == {A, B}


async def test_a_sheddable_request_of_a_saturated_pool_gets_429(epp: Epp) -> None:
    epp.scheduler.saturated = True
    stream = epp.stream()
    await stream.send(
        request_headers(("x-gateway-inference-objective", "batch")),
        request_body(CHAT, end=True),
    )
    status, message = refusal(await stream.recv())
    assert status == 429
    assert "sheddable" in message
    assert await stream.recv() is grpc.aio.EOF
    assert await stream.call.code() == grpc.StatusCode.OK
    assert epp.scheduler.scheduled[0].priority == -1


async def test_no_eligible_endpoint_gets_503(epp: Epp) -> None:
    stream = epp.stream()
    first = request_headers(end=True)
    first.metadata_context.filter_metadata["envoy.lb.subset_hint"].update(
        {"x-gateway-destination-endpoint-subset": "10.9.9.9:8000"}
    )
    await stream.send(first)
    status, message = refusal(await stream.recv())
    assert (status, message) == (503, "no ready endpoint in the pool")
    assert await stream.recv() is grpc.aio.EOF


async def test_the_subset_hint_restricts_the_pick(epp: Epp) -> None:
    stream = epp.stream()
    first = request_headers(end=True)
    first.metadata_context.filter_metadata["envoy.lb.subset_hint"].update(
        {"x-gateway-destination-endpoint-subset": [str(C)]}
    )
    await stream.send(first)
    assert destination(await stream.recv())["x-gateway-destination-endpoint"] == str(C)


async def test_a_body_that_is_not_json_gets_400(epp: Epp) -> None:
    stream = epp.stream()
    await stream.send(request_headers(), request_body(b"{not json", end=True))
    status, message = refusal(await stream.recv())
    assert status == 400
    assert "not a JSON object" in message
    assert await stream.recv() is grpc.aio.EOF
    assert epp.scheduler.scheduled == []


async def test_a_body_over_the_cap_gets_413(epp: Epp) -> None:
    stream = epp.stream()  # the fixture's cap is 4096 bytes
    await stream.send(request_headers(), request_body(b"x" * 3000, end=False))
    await stream.send(request_body(b"x" * 3000, end=False))
    status, message = refusal(await stream.recv())
    assert status == 413
    assert "4096" in message
    assert await stream.recv() is grpc.aio.EOF


async def test_a_cancelled_stream_cancels_the_waiting_schedule(epp: Epp) -> None:
    scheduler = epp.scheduler
    scheduler.gate = asyncio.Event()  # requests wait in a queue
    stream = epp.stream()
    await stream.send(request_headers(end=True))
    await asyncio.wait_for(scheduler.waiting.wait(), 10)
    stream.call.cancel()  # the client left: Envoy resets the stream
    await asyncio.wait_for(scheduler.cancelled.wait(), 10)
    assert scheduler.in_flight == {}
    assert scheduler.outcomes.empty()  # nothing was scheduled, so nothing is reported


async def test_a_stream_cut_after_the_decision_reports_an_aborted_outcome(epp: Epp) -> None:
    stream = epp.stream()
    await stream.send(request_headers(end=True))
    await stream.recv()
    await stream.send(response_headers(200))
    await stream.recv()
    stream.call.cancel()
    _, endpoint, outcome = await epp.scheduler.next_outcome()
    assert (endpoint, outcome.status, outcome.aborted) == (A, 200, True)
    assert epp.scheduler.in_flight == {}


async def test_a_protocol_violation_is_invalid_argument(epp: Epp) -> None:
    stream = epp.stream()
    await stream.send(request_body(CHAT, end=True))  # a body before any headers
    with pytest.raises(grpc.aio.AioRpcError):
        await stream.recv()
    assert await stream.call.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_body while the stream is in request_headers" in await stream.call.details()


async def test_a_failing_scheduler_is_internal() -> None:
    class Broken(RoundRobinScheduler):
        async def schedule(self, request: object) -> list:  # type: ignore[override]
            raise RuntimeError("boom")

    server = await start_server(Broken([A]), "127.0.0.1:0")
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stream = Epp(server, Broken([]), channel).stream()
            await stream.send(request_headers(end=True))
            with pytest.raises(grpc.aio.AioRpcError):
                await stream.recv()
            assert await stream.call.code() == grpc.StatusCode.INTERNAL
            assert "boom" in await stream.call.details()
    finally:
        await server.stop(0)


@pytest.mark.parametrize(
    "service", ["", "liveness", "readiness", "envoy.service.ext_proc.v3.ExternalProcessor"]
)
async def test_health_services_serve(epp: Epp, service: str) -> None:
    health = health_pb2_grpc.HealthStub(epp.channel)
    answer = await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
    assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_health_readiness_flips_and_unknown_services_are_not_found(epp: Epp) -> None:
    health = health_pb2_grpc.HealthStub(epp.channel)
    await epp.server.set_ready(False)
    readiness = await health.Check(health_pb2.HealthCheckRequest(service="readiness"), timeout=10)
    assert readiness.status == health_pb2.HealthCheckResponse.NOT_SERVING
    liveness = await health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=10)
    assert liveness.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_taken_address_is_an_os_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        taken_line = rf"port {port} on 127.0.0.1 \(--listen 127.0.0.1:{port}\) is already in use"
        with pytest.raises(OSError, match=taken_line):
            await start_server(RoundRobinScheduler([A]), f"127.0.0.1:{port}")
