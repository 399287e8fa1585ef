"""The real ``openai`` SDK (async) against a simulator on 127.0.0.2, on asyncio and uvloop."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest

from inference_ext.sim.engine import Sequence
from inference_ext.sim.server import SimServer
from inference_ext.sim.tokenizer import count_tokens, render_chat
from tests.fixtures.sim import SimFactory

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)


MESSAGES: Any = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Hi!"},
]
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "days", "unit"],
        },
    },
}
SEARCH: Any = {
    "type": "function",
    "function": {
        "name": "search",
        "parameters": {
            "type": "object",
            "properties": {"q": {"type": "string"}},
            "required": ["q"],
        },
    },
}


@pytest.fixture
async def sim(sim_factory: SimFactory) -> SimServer:
    (server,) = await sim_factory(loras=("sql-v1",), output_tokens=(5, 9))
    return server


@pytest.fixture
async def client(sim: SimServer) -> AsyncIterator[openai.AsyncOpenAI]:
    client = openai.AsyncOpenAI(base_url=f"{sim.url}/v1", api_key="sim", max_retries=0)
    yield client
    await client.close()


def finished(sim: SimServer) -> list[Sequence]:
    """Record the sequences the engine finishes from now on."""
    seqs: list[Sequence] = []
    sim.engine.on_finish = seqs.append
    return seqs


async def test_chat_without_streaming_answers_max_tokens_words_with_usage(
    client: openai.AsyncOpenAI,
) -> None:
    reply = await client.chat.completions.create(
        model="llama-3-8b",
        messages=MESSAGES,
        max_tokens=6,
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "length" and choice.message.role == "assistant"
    assert choice.message.content is not None and len(choice.message.content) == 6 * 4
    prompt = render_chat((m["role"], m["content"]) for m in MESSAGES)
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (count_tokens(prompt), 6)
    assert reply.usage.total_tokens == count_tokens(prompt) + 6
    assert reply.model == "llama-3-8b" and reply.object == "chat.completion"


async def test_chat_streaming_sends_role_then_a_chunk_per_token_then_usage(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model="llama-3-8b",
        messages=MESSAGES,
        max_completion_tokens=7,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    words = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(words) == 7 and all(len(word) == 4 for word in words)
    finishing = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishing[-1] == "length" and set(finishing[:-1]) == {None}
    usage_chunk = chunks[-1]
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert usage_chunk.usage.completion_tokens == 7


async def test_without_max_tokens_the_length_comes_from_the_seed_and_the_request(
    sim_factory: SimFactory,
) -> None:
    servers = await sim_factory(2, output_tokens=(5, 40))
    answers = []
    for server in (servers[0], servers[0], servers[1]):
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="k") as client:
            reply = await client.chat.completions.create(
                model="llama-3-8b",
                messages=MESSAGES,
            )
        assert reply.choices[0].finish_reason == "stop" and reply.usage is not None
        assert 5 <= reply.usage.completion_tokens <= 40
        answers.append(reply.choices[0].message.content)
    assert answers[0] == answers[1] == answers[2]  # same request, same answer, any replica


async def test_completions_streaming_and_not_with_text_and_token_id_prompts(
    client: openai.AsyncOpenAI,
) -> None:
    whole = await client.completions.create(model="llama-3-8b", prompt="Once upon", max_tokens=4)
    assert whole.object == "text_completion" and len(whole.choices[0].text) == 16
    assert whole.usage is not None and whole.usage.prompt_tokens == count_tokens("Once upon")

    stream = await client.completions.create(
        model="llama-3-8b",
        prompt=[1, 2, 3, 4, 5],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    texts = [c.choices[0].text for c in chunks if c.choices and c.choices[0].text]
    assert len(texts) == 3
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens == 5


async def test_a_repeated_prompt_reports_cached_tokens(client: openai.AsyncOpenAI) -> None:
    long: Any = [{"role": "user", "content": "tell me about KV caches " * 40}]
    usages = []
    for _ in range(2):
        reply = await client.chat.completions.create(
            model="llama-3-8b", messages=long, max_tokens=2
        )
        assert reply.usage is not None and reply.usage.prompt_tokens_details is not None
        usages.append((reply.usage.prompt_tokens, reply.usage.prompt_tokens_details.cached_tokens))
    (tokens, cold), (_, warm) = usages
    assert (cold, warm) == (0, (tokens - 1) // 16 * 16)  # all full blocks but the last token's


async def test_a_tool_call_parses_with_the_sdk_and_fits_the_schema(
    client: openai.AsyncOpenAI,
) -> None:
    reply = await client.chat.completions.create(
        model="llama-3-8b",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER, SEARCH],
    )
    (choice,) = reply.choices
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name in ("get_weather", "search")
    args = json.loads(call.function.arguments)
    if call.function.name == "get_weather":
        assert isinstance(args["city"], str) and 1 <= args["days"] <= 7
        assert args["unit"] in ("celsius", "fahrenheit")
    else:
        assert isinstance(args["q"], str)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == count_tokens(call.function.arguments)


async def test_a_streamed_tool_call_reassembles_to_the_same_call(
    client: openai.AsyncOpenAI,
) -> None:
    request: Any = {
        "model": "llama-3-8b",
        "messages": [{"role": "user", "content": "Weather in Oslo?"}],
        "tools": [WEATHER, SEARCH],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    }
    whole = await client.chat.completions.create(**request)
    stream = await client.chat.completions.create(**request, stream=True)
    name, arguments, reason = "", "", None
    async for chunk in stream:
        choice = chunk.choices[0]
        for call in choice.delta.tool_calls or []:
            name += call.function.name or ""
            arguments += call.function.arguments or ""
        reason = choice.finish_reason or reason
    (call,) = whole.choices[0].message.tool_calls
    assert (name, arguments, reason) == ("get_weather", call.function.arguments, "tool_calls")


async def test_tool_choice_none_and_a_tool_result_get_text(client: openai.AsyncOpenAI) -> None:
    plain = await client.chat.completions.create(
        model="llama-3-8b",
        messages=[{"role": "user", "content": "Hi"}],
        tools=[WEATHER],
        tool_choice="none",
        max_tokens=3,
    )
    assert plain.choices[0].message.tool_calls is None and plain.choices[0].message.content
    after_tool = await client.chat.completions.create(
        model="llama-3-8b",
        messages=[
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": "{}"},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        tools=[WEATHER],
        max_tokens=3,
    )
    assert after_tool.choices[0].finish_reason == "length"
    assert after_tool.choices[0].message.content and not after_tool.choices[0].message.tool_calls


async def test_models_lists_the_base_model_and_its_adapters_with_parent(
    client: openai.AsyncOpenAI,
) -> None:
    models = [model.to_dict() async for model in client.models.list()]
    assert [(m["id"], m["parent"]) for m in models] == [
        ("llama-3-8b", None),
        ("sql-v1", "llama-3-8b"),
    ]


async def test_an_adapter_request_runs_on_the_adapter(
    sim: SimServer, client: openai.AsyncOpenAI
) -> None:
    seqs = finished(sim)
    reply = await client.chat.completions.create(
        model="sql-v1",
        messages=MESSAGES,
        max_tokens=2,
    )
    assert reply.model == "sql-v1"
    (seq,) = seqs
    assert seq.adapter == "sql-v1" and seq.lora_loaded
    assert sim.engine.loras.loaded == {"sql-v1": 0}
