"""Errors in OpenAI's shape, each with its status and a message naming the field."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from inference_ext.sim.server import SimServer
from tests.fixtures.sim import SimFactory

CHAT: Any = {"model": "llama-3-8b", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture
async def sim(sim_factory: SimFactory) -> SimServer:
    (server,) = await sim_factory(kv_blocks=8)  # a context of 128 tokens
    return server


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "message"),
    [
        ("/v1/chat/completions", b"{not json", 400, None, "the request body is not valid JSON"),
        ("/v1/chat/completions", b"[1]", 400, None, "the request body must be a JSON object"),
        ("/v1/chat/completions", {"messages": []}, 400, "model", "model: a model name"),
        ("/v1/chat/completions", {**CHAT, "model": "gpt-9"}, 404, "model",
         "The model `gpt-9` does not exist."),
        ("/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages",
         "messages: a non-empty list"),
        ("/v1/chat/completions", {**CHAT, "messages": [{"role": "robot", "content": "x"}]}, 400,
         "messages", "messages[0].role: expected one of"),
        ("/v1/chat/completions", {**CHAT, "n": 2}, 400, "n", "n must be 1, got 2"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 0}, 400, "max_tokens",
         "max_tokens: expected an integer >= 1, got 0"),
        ("/v1/chat/completions", {**CHAT, "stream": "yes"}, 400, "stream", "stream: expected true"),
        ("/v1/chat/completions", {**CHAT, "stream_options": {"include_usage": True}}, 400,
         "stream_options", "only allowed when stream is true"),
        ("/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, 400, "tools",
         "tools[0]: expected"),
        ("/v1/chat/completions", {**CHAT, "tool_choice": "required"}, 400, "tool_choice",
         "the request offers no tools"),
        ("/v1/chat/completions", {**CHAT, "max_tokens": 200}, 400, "messages",
         "maximum context length is 128 tokens"),
        ("/v1/completions", {"model": "llama-3-8b", "prompt": ["a", "b"]}, 400, "prompt",
         "one prompt per request"),
        ("/v1/completions", {"model": "llama-3-8b", "prompt": ""}, 400, "prompt",
         "prompt: must not be empty"),
    ],
)  # fmt: skip
async def test_a_bad_request_is_answered_in_openai_error_shape(
    sim: SimServer, path: str, body: Any, status: int, param: str | None, message: str
) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        if isinstance(body, bytes):
            response = await client.post(path, content=body)
        else:
            response = await client.post(path, json=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert message in error["message"]
    assert error["param"] == param
    assert sim.engine.stats.prompt_tokens == 0  # nothing reached the engine


async def test_the_sdk_raises_its_typed_errors_with_the_message(sim: SimServer) -> None:
    async with openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="k", max_retries=0) as client:
        with pytest.raises(openai.NotFoundError) as missing:
            await client.chat.completions.create(model="nope", messages=CHAT["messages"])
        with pytest.raises(openai.BadRequestError) as too_many:
            await client.chat.completions.create(model="llama-3-8b", messages=CHAT["messages"], n=3)
    assert missing.value.status_code == 404 and missing.value.code == "model_not_found"
    assert isinstance(missing.value.body, dict)
    assert missing.value.body["message"] == "The model `nope` does not exist."
    assert too_many.value.status_code == 400 and too_many.value.param == "n"


@pytest.mark.parametrize(
    ("method", "path", "status", "message"),
    [
        ("GET", "/v1/chat/completions", 405, "/v1/chat/completions takes POST"),
        ("POST", "/metrics", 405, "/metrics takes GET"),
        ("GET", "/v2/anything", 404, "no route for /v2/anything"),
    ],
)
async def test_wrong_method_or_path(
    sim: SimServer, method: str, path: str, status: int, message: str
) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        response = await client.request(method, path)
    assert response.status_code == status and response.json()["error"]["message"] == message


async def test_malformed_http_gets_400_and_the_connection_closes(sim: SimServer) -> None:
    reader, writer = await asyncio.open_connection(sim.address, sim.port)
    writer.write(b"NOT HTTP AT ALL\r\n\r\n")
    response = await reader.read()  # until the server closes
    writer.close()
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b'"message":"malformed HTTP request"' in response
