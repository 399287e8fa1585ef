"""The HTTP side: failure injection, stalls, pipelining, clients that leave, replicas."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference_ext.sim.engine import SeqState, Sequence
from inference_ext.sim.server import SimServer
from tests.fixtures.sim import SimFactory

CHAT: Any = {
    "model": "llama-3-8b",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 5,
}


async def statuses(server: SimServer, count: int) -> list[int]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        return [
            (await client.post("/v1/chat/completions", json=CHAT)).status_code for _ in range(count)
        ]


async def test_error_rate_one_answers_every_request_with_429_or_500(
    sim_factory: SimFactory,
) -> None:
    (sim,) = await sim_factory(error_rate=1.0)
    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="k", max_retries=0) as client:
        raised = []
        for _ in range(20):
            with pytest.raises(openai.APIStatusError) as error:
                await client.chat.completions.create(**CHAT)
            raised.append(error.value)
    assert {e.status_code for e in raised} == {429, 500}
    for exc in raised:
        expected = openai.RateLimitError if exc.status_code == 429 else openai.InternalServerError
        assert isinstance(exc, expected)
        assert isinstance(exc.body, dict) and "simulated by --error-rate" in exc.body["message"]
    assert sim.engine.stats.prompt_tokens == 0


async def test_error_codes_choose_the_injected_status(sim_factory: SimFactory) -> None:
    (sim,) = await sim_factory(error_rate=1.0, error_codes=(503,))
    async with httpx.AsyncClient(base_url=sim.url) as client:
        response = await client.post("/v1/completions", json={"model": "llama-3-8b", "prompt": "x"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "overloaded"


async def test_a_partial_error_rate_is_seeded_and_a_retry_can_succeed(
    sim_factory: SimFactory,
) -> None:
    first, second = await sim_factory(2, error_rate=0.5)
    same_seed = (await sim_factory(1, error_rate=0.5, host="127.0.0.4"))[0]
    a, b = await statuses(first, 30), await statuses(same_seed, 30)
    assert a == b  # replica 0 of the same seed: the same draws in arrival order
    assert {200, 429, 500} <= set(a)
    assert await statuses(second, 30) != a  # another replica draws its own


async def test_a_stalled_stream_pauses_then_delivers_every_token(sim_factory: SimFactory) -> None:
    (sim,) = await sim_factory(stall_rate=1.0, stall_ms=300)
    seqs: list[Sequence] = []
    sim.engine.on_finish = seqs.append
    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="k") as client:
        stream = await client.chat.completions.create(**CHAT, stream=True)
        chunks = [c async for c in stream]
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(words) == 5
    (seq,) = seqs
    assert 1 <= seq.stall_after <= 4 and sim.engine.stats.stalls == 1
    assert seq.stalled_s >= 0.300 * 0.01  # the engine held it back for stall_ms x time_scale


async def test_requests_pipelined_on_one_connection_are_answered_in_order(sim: SimServer) -> None:
    reader, writer = await asyncio.open_connection(sim.address, sim.port)
    body = b'{"model":"llama-3-8b","prompt":"abc","max_tokens":3,"stream":true}'
    generate = b"POST /v1/completions HTTP/1.1\r\nhost: s\r\ncontent-length: %d\r\n\r\n%b" % (
        len(body),
        body,
    )
    writer.write(generate + b"GET /health HTTP/1.1\r\nhost: s\r\nconnection: close\r\n\r\n")
    response = await reader.read()
    writer.close()
    stream_end = response.index(b"data: [DONE]")
    assert response.count(b'"finish_reason":null') == 3
    assert response.endswith(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
    assert response.index(b"HTTP/1.1 200 OK\r\ncontent-length: 0") > stream_end


async def test_a_body_sent_after_100_continue_is_answered(sim: SimServer) -> None:
    reader, writer = await asyncio.open_connection(sim.address, sim.port)
    body = b'{"model":"llama-3-8b","prompt":"abc","max_tokens":2}'
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\nexpect: 100-continue\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n" % len(body)
    )
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(body)
    response = await reader.read()
    writer.close()
    assert response.startswith(b"HTTP/1.1 200 OK") and b'"completion_tokens":2' in response


async def test_a_client_that_leaves_mid_stream_aborts_its_sequence(sim_factory: SimFactory) -> None:
    (sim,) = await sim_factory(max_num_seqs=1, output_tokens=(100_000, 100_000), kv_blocks=8000)
    aborted: asyncio.Future[Sequence] = asyncio.get_running_loop().create_future()
    sim.engine.on_finish = aborted.set_result
    reader, writer = await asyncio.open_connection(sim.address, sim.port)
    body = b'{"model":"llama-3-8b","prompt":"abc","stream":true}'
    writer.write(
        b"POST /v1/completions HTTP/1.1\r\ncontent-length: %d\r\n\r\n%b" % (len(body), body)
    )
    await reader.readuntil(b'"finish_reason":null')  # the first token
    writer.close()
    seq = await asyncio.wait_for(aborted, 10)
    assert seq.state is SeqState.ABORTED and seq.generated < 100_000
    assert sim.engine.running == [] and sim.engine.kv.used == 0
    assert sim.engine.stats.finished["abort"] == 1


async def test_replicas_listen_on_consecutive_addresses_with_their_own_engines(
    sim_factory: SimFactory,
) -> None:
    servers = await sim_factory(3)
    assert [s.address for s in servers] == ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    assert len({s.port for s in servers}) == 1 and servers[0].port > 0
    assert len({id(s.engine) for s in servers}) == 3
    async with httpx.AsyncClient() as client:
        reply = await client.post(f"{servers[1].url}/v1/chat/completions", json=CHAT)
        assert reply.status_code == 200
        generated = []
        for server in servers:
            text = (await client.get(f"{server.url}/metrics")).text
            (family,) = [
                f
                for f in text_string_to_metric_families(text)
                if f.name == "vllm:generation_tokens"
            ]
            generated.append(family.samples[0].value)
        health = await client.get(f"{servers[2].url}/health")
    assert generated == [0, 5, 0]
    assert health.status_code == 200


@pytest.fixture
async def sim(sim_factory: SimFactory) -> SimServer:
    (server,) = await sim_factory()
    return server
