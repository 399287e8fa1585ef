"""The gateway's ext_proc client against ``ambient epp`` and against slow or broken pickers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from gateway.backends.base import Endpoint, PickRefused
from gateway.request import RequestHead
from inference_ext.extproc import messages as pb
from inference_ext.extproc.client import ExtProcPicker, ExtProcUnavailable
from inference_ext.extproc.server import start_server
from tests.fixtures.extproc_peers import CHAT, A, B, C, Epp, decision, start_fake_epp
from tests.fixtures.schedulers import RoundRobinScheduler

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)

# What the pool lists, as the gateway holds it: the picker's "ip:port" names map to these.
POOL = {str(e): Endpoint(e.address, e.port, protocol="h2c") for e in (A, B, C)}


def chat_head(*extra: tuple[str, str]) -> RequestHead:
    headers = [("Host", "gateway"), ("Content-Type", "application/json"), *extra]
    return RequestHead("POST", "/v1/chat/completions", "x=1", "gateway", headers)


@pytest.fixture
async def picker(epp: Epp) -> AsyncIterator[ExtProcPicker]:
    picker = ExtProcPicker(epp.target, timeout=10)
    yield picker
    await picker.close()


async def test_choose_sends_the_request_and_maps_the_decision(
    epp: Epp, picker: ExtProcPicker
) -> None:
    head = chat_head(("X-Gateway-Inference-Objective", "critical"))
    endpoints = await picker.choose(head, CHAT, POOL, request_id="gw-1")
    assert endpoints == [POOL["10.0.0.1:8000"], POOL["10.0.0.2:8000"]]
    assert endpoints[0] is POOL["10.0.0.1:8000"]  # the pool's own Endpoint (h2c), not a new one
    (request,) = epp.scheduler.scheduled
    assert (request.request_id, request.model, request.body_size) == ("gw-1", "llama", len(CHAT))
    assert (request.objective, request.priority) == ("critical", 2)
    headers = request.headers
    assert (headers[":method"], headers[":path"], headers[":authority"]) == (
        "POST",
        "/v1/chat/completions?x=1",
        "gateway",
    )
    assert headers["content-type"] == "application/json"
    assert "host" not in headers
    # choose() ends the stream after the decision: the picker stops counting the request.
    _, endpoint, outcome = await epp.scheduler.next_outcome()
    assert (endpoint, outcome.status, outcome.aborted) == (A, 0, True)
    assert epp.scheduler.in_flight == {}


async def test_a_request_without_body_ends_with_its_headers(
    epp: Epp, picker: ExtProcPicker
) -> None:
    head = RequestHead("GET", "/v1/models", "", "gateway", [("x-request-id", "r-7")])
    assert await picker.choose(head, None, POOL) == [POOL["10.0.0.1:8000"], POOL["10.0.0.2:8000"]]
    (request,) = epp.scheduler.scheduled
    assert (request.request_id, request.model, request.body_size) == ("r-7", "", 0)


async def test_a_large_body_goes_in_chunks_and_the_echo_is_drained() -> None:
    scheduler = RoundRobinScheduler([A])
    server = await start_server(scheduler, "127.0.0.1:0", max_body=1 << 20)
    picker = ExtProcPicker(f"127.0.0.1:{server.port}", timeout=10)
    body = json.dumps({"model": "m", "prompt": "x" * 300_000}).encode()
    try:
        call = await picker.open(chat_head(), body, POOL)
        assert call.endpoints == [POOL["10.0.0.1:8000"]]
        call.response_started(200)
        call.response_ended()
        await asyncio.wait_for(call.wait_closed(), 10)
        request, _, outcome = await scheduler.next_outcome()
        assert request.body_size == len(body)
        assert (outcome.status, outcome.aborted) == (200, False)
    finally:
        await picker.close()
        await server.stop(0)


async def test_open_reports_the_response_to_the_picker(epp: Epp, picker: ExtProcPicker) -> None:
    call = await picker.open(chat_head(), CHAT, POOL)
    assert call.endpoints == [POOL["10.0.0.1:8000"], POOL["10.0.0.2:8000"]]
    assert epp.scheduler.in_flight  # counted until the response ends
    call.response_started(200, served=POOL["10.0.0.2:8000"])  # a retry landed on the fallback
    call.response_ended()
    _, endpoint, outcome = await epp.scheduler.next_outcome()
    assert endpoint == B
    assert (outcome.status, outcome.ok, outcome.aborted) == (200, True, False)
    await asyncio.wait_for(call.wait_closed(), 10)
    assert epp.scheduler.in_flight == {}


async def test_endpoints_outside_the_pool_are_dropped(epp: Epp, picker: ExtProcPicker) -> None:
    only_b = {"10.0.0.2:8000": POOL["10.0.0.2:8000"]}
    assert await picker.choose(chat_head(), CHAT, only_b) == [POOL["10.0.0.2:8000"]]
    only_c = {"10.0.0.3:8000": POOL["10.0.0.3:8000"]}
    epp.scheduler.fallbacks = 0  # round robin: the picker now names B alone
    with pytest.raises(ExtProcUnavailable, match="none of it an endpoint of the pool"):
        await picker.choose(chat_head(), CHAT, only_c)


async def test_an_immediate_response_is_a_refusal(epp: Epp, picker: ExtProcPicker) -> None:
    epp.scheduler.saturated = True
    head = chat_head(("x-gateway-inference-objective", "batch"))
    with pytest.raises(PickRefused) as shed:
        await picker.choose(head, CHAT, POOL)
    assert shed.value.status == 429
    assert "sheddable" in shed.value.message
    epp.scheduler.endpoints = []
    with pytest.raises(PickRefused) as none:
        await picker.choose(chat_head(), CHAT, POOL)
    assert (none.value.status, none.value.message) == (503, "no ready endpoint in the pool")
    with pytest.raises(PickRefused) as bad:
        await picker.choose(chat_head(), b"[1, 2]", POOL)
    assert bad.value.status == 400


async def test_a_refusal_while_the_body_is_still_being_sent(
    epp: Epp, picker: ExtProcPicker
) -> None:
    body = json.dumps({"model": "m", "prompt": "x" * 200_000}).encode()  # the cap is 4096
    with pytest.raises(PickRefused) as too_large:
        await picker.choose(chat_head(), body, POOL)
    assert too_large.value.status == 413


async def test_cancelling_choose_cancels_the_schedule(epp: Epp, picker: ExtProcPicker) -> None:
    epp.scheduler.gate = asyncio.Event()
    task = asyncio.create_task(picker.choose(chat_head(), CHAT, POOL))
    await asyncio.wait_for(epp.scheduler.waiting.wait(), 10)
    task.cancel()  # the client left
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(epp.scheduler.cancelled.wait(), 10)


async def _silent(requests: AsyncIterator[Any], context: Any) -> None:
    async for _ in requests:
        pass
    await asyncio.Event().wait()  # never decides


async def test_no_decision_in_time_is_unavailable_and_cancels_the_call() -> None:
    fake = await start_fake_epp(_silent)
    picker = ExtProcPicker(fake.target, timeout=0.2)
    try:
        with pytest.raises(ExtProcUnavailable, match=r"no decision within 0\.2s"):
            await picker.choose(chat_head(), CHAT, POOL)
        await asyncio.wait_for(fake.cancelled.wait(), 10)
    finally:
        await picker.close()
        await fake.server.stop(0)


async def test_an_unreachable_picker_is_unavailable(free_port: int) -> None:
    picker = ExtProcPicker(f"127.0.0.1:{free_port}", timeout=10)
    try:
        with pytest.raises(ExtProcUnavailable, match="UNAVAILABLE"):
            await picker.choose(chat_head(), CHAT, POOL)
    finally:
        await picker.close()


async def _read_request(requests: AsyncIterator[Any]) -> None:
    """Read to the request's end, so the client has no write in flight when the picker ends."""
    async for message in requests:
        if message.request_body.end_of_stream or message.request_headers.end_of_stream:
            return


async def _fails(requests: AsyncIterator[Any], context: Any) -> None:
    await _read_request(requests)
    await context.abort(grpc.StatusCode.INTERNAL, "picker crashed")


async def _ends(requests: AsyncIterator[Any], context: Any) -> None:
    await _read_request(requests)


async def _body_first(requests: AsyncIterator[Any], context: Any) -> None:
    await _read_request(requests)
    await context.write(pb.ProcessingResponse(request_body=pb.BodyResponse()))


async def _names_nobody(requests: AsyncIterator[Any], context: Any) -> None:
    await _read_request(requests)
    await context.write(pb.ProcessingResponse(request_headers=pb.HeadersResponse()))


@pytest.mark.parametrize(
    ("handler", "error"),
    [
        (_fails, "INTERNAL: picker crashed"),
        (_ends, r"ended the stream \(OK\) undecided"),
        (_body_first, "answered request_body before the request headers"),
        (_names_nobody, "the decision names no endpoint"),
    ],
)
async def test_a_broken_picker_is_unavailable(handler: Any, error: str) -> None:
    fake = await start_fake_epp(handler)
    picker = ExtProcPicker(fake.target, timeout=10)
    try:
        with pytest.raises(ExtProcUnavailable, match=error):
            await picker.choose(chat_head(), CHAT, POOL)
    finally:
        await picker.close()
        await fake.server.stop(0)


async def test_the_decision_may_come_as_metadata_only() -> None:
    async def metadata_only(requests: AsyncIterator[Any], context: Any) -> None:
        await _read_request(requests)
        await context.write(decision("10.0.0.3:8000, 10.9.9.9:80", in_header=False))

    fake = await start_fake_epp(metadata_only)
    picker = ExtProcPicker(fake.target, timeout=10)
    try:
        assert await picker.choose(chat_head(), None, POOL) == [POOL["10.0.0.3:8000"]]
    finally:
        await picker.close()
        await fake.server.stop(0)


async def test_concurrent_requests_each_get_a_stream(epp: Epp, picker: ExtProcPicker) -> None:
    results = await asyncio.gather(*(picker.choose(chat_head(), CHAT, POOL) for _ in range(6)))
    firsts = [r[0] for r in results]
    assert sorted(str(e) for e in firsts) == sorted([str(A), str(B), str(C)] * 2)
    for _ in range(6):
        await epp.scheduler.next_outcome()
