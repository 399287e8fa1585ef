"""The ``openai`` SDK streaming a chat completion through the gateway, as LLM clients do.

The model server is a small OpenAI-compatible app (Starlette on uvicorn) written for the test: no
real model server can run here. It records when it sends each chunk and whether the client's
disconnect reached it, so the test can tell streaming from buffering and prove cancellation.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import openai
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.fixtures.echo_process import gateway_yaml, service_yaml
from tests.fixtures.gateway_process import free_port
from tests.fixtures.proxy import holder_from_yaml
from tests.fixtures.uvicorn_apps import QuietServer


@dataclass
class ModelServer:
    """What the fake model server saw."""

    port: int
    sent_at: list[float] = field(default_factory=list)
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    models: list[str] = field(default_factory=list)


def chunk(model: str, content: str | None, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [
            {"index": 0, "delta": {"content": content} if content else {}, "finish_reason": finish}
        ],
    }
    return b"data: " + json.dumps(body).encode() + b"\n\n"


@pytest.fixture
async def model_server() -> AsyncIterator[ModelServer]:
    state = ModelServer(port=free_port())

    async def completions(request: Request) -> StreamingResponse:
        body = await request.json()
        state.models.append(body["model"])
        words = int(request.query_params.get("words", "5"))

        async def stream() -> AsyncIterator[bytes]:
            try:
                for i in range(words):
                    state.sent_at.append(time.monotonic())
                    yield chunk(body["model"], f"w{i} ")
                    await asyncio.sleep(0.05)
                yield chunk(body["model"], None, "stop")
                yield b"data: [DONE]\n\n"
                state.finished.set()
            except asyncio.CancelledError:
                state.cancelled.set()
                raise

        return StreamingResponse(stream(), media_type="text/event-stream")

    app = Starlette(routes=[Route("/v1/chat/completions", completions, methods=["POST"])])
    server = QuietServer(
        uvicorn.Config(app, host="127.0.0.1", port=state.port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield state
    server.should_exit = True
    await task


@pytest.fixture
async def gateway_url(model_server: ModelServer, gateway_factory) -> str:
    port = free_port()
    await gateway_factory(
        holder_from_yaml(
            gateway_yaml(port)
            + service_yaml("model", model_server.port)
            + """
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: chat, namespace: default}
spec:
  parentRefs: [{name: gw}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /v1}, method: POST}]
      backendRefs: [{name: model, port: 80}]
"""
        )
    )
    return f"http://127.0.0.1:{port}/v1"


async def test_stream_chunks_arrive_as_the_model_writes_them(
    gateway_url: str, model_server: ModelServer
) -> None:
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key="test", max_retries=0)
    arrived: list[float] = []
    text = ""
    stream = await client.chat.completions.create(
        model="tiny-llm",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_query={"words": 6},
    )
    async for event in stream:
        if event.choices and event.choices[0].delta.content:
            arrived.append(time.monotonic())
            text += event.choices[0].delta.content
    await client.close()
    assert text == "w0 w1 w2 w3 w4 w5 "
    assert model_server.models == ["tiny-llm"]
    # Each chunk reached the client before the model wrote the next one: nothing was buffered.
    for i in range(len(arrived) - 1):
        assert arrived[i] < model_server.sent_at[i + 1], f"chunk {i} held back"


async def test_client_leaving_cancels_the_generation(
    gateway_url: str, model_server: ModelServer
) -> None:
    client = openai.AsyncOpenAI(base_url=gateway_url, api_key="test", max_retries=0)
    stream = await client.chat.completions.create(
        model="tiny-llm",
        messages=[{"role": "user", "content": "long"}],
        stream=True,
        extra_query={"words": 400},
    )
    received = 0
    async for _event in stream:
        received += 1
        if received == 3:
            break
    await stream.close()
    await client.close()
    # The model server's generator is cancelled long before its 400 words (20 s) are written.
    await asyncio.wait_for(model_server.cancelled.wait(), timeout=5)
    assert not model_server.finished.is_set()
    assert len(model_server.sent_at) < 400
