"""LLMBackend across formats: the OpenAI SDK served by an Anthropic provider and the Anthropic SDK
served by an OpenAI provider, streaming and not, with tool calls. The providers are local
stand-ins for the hosted APIs (tests/fixtures/llm_providers.py)."""

from __future__ import annotations

import json

import anthropic
import httpx
import openai
import pytest

from tests.fixtures.llm_gateway import StartLlm
from tests.fixtures.llm_providers import ARGUMENTS

TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}
ANTHROPIC_TOOL = {
    "name": "weather",
    "description": "The weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def openai_client(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="client-key", max_retries=0)


def anthropic_client(base: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base, api_key="client-key", max_retries=0)


async def test_openai_sdk_to_anthropic_provider(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    completion = await openai_client(gateway.base).chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello"},
        ],
        max_tokens=50,
    )
    assert completion.choices[0].message.content == "Hello from the stand-in"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 18
    (seen,) = gateway.anthropic.requests
    assert seen.json["system"] == "Be brief."
    assert seen.json["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]}
    ]


async def test_openai_sdk_tool_call_from_anthropic_provider(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    completion = await openai_client(gateway.base).chat.completions.create(
        model="claude-sonnet-4-5",
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[TOOL],  # type: ignore[list-item]
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.function.name == "weather"  # type: ignore[union-attr]
    assert json.loads(call.function.arguments) == ARGUMENTS  # type: ignore[union-attr]
    assert gateway.anthropic.requests[0].json["tools"][0]["input_schema"]["type"] == "object"


@pytest.mark.parametrize("tools", [False, True])
async def test_openai_sdk_streams_from_anthropic_provider(start_llm: StartLlm, tools: bool) -> None:
    gateway = await start_llm()
    stream = await openai_client(gateway.base).chat.completions.create(
        model="claude-haiku-4-5",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
        **({"tools": [TOOL]} if tools else {}),  # type: ignore[arg-type]
    )
    text, arguments, finish, usage = [], [], None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            text.append(choice.delta.content or "")
            for call in choice.delta.tool_calls or ():
                arguments.append(call.function.arguments or "")  # type: ignore[union-attr]
            finish = choice.finish_reason or finish
    if tools:
        assert json.loads("".join(arguments)) == ARGUMENTS and finish == "tool_calls"
    else:
        assert "".join(text) == "Hello from the stand-in" and finish == "stop"
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (11, 7)


async def test_anthropic_sdk_to_openai_provider(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    message = await anthropic_client(gateway.base).messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        system="Be brief.",
        messages=[{"role": "user", "content": "hello"}],
    )
    assert (
        message.content[0].type == "text" and message.content[0].text == "Hello from the stand-in"
    )
    assert message.stop_reason == "end_turn"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (11, 7)
    (seen,) = gateway.openai.requests
    assert seen.json["messages"][0] == {"role": "system", "content": "Be brief."}


async def test_anthropic_sdk_tool_use_from_openai_provider(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    message = await anthropic_client(gateway.base).messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[ANTHROPIC_TOOL],  # type: ignore[list-item]
    )
    assert message.stop_reason == "tool_use"
    (block,) = message.content
    assert block.type == "tool_use" and block.name == "weather" and block.input == ARGUMENTS


@pytest.mark.parametrize("tools", [False, True])
async def test_anthropic_sdk_streams_from_openai_provider(start_llm: StartLlm, tools: bool) -> None:
    gateway = await start_llm()
    async with anthropic_client(gateway.base).messages.stream(
        model="llama",
        max_tokens=50,
        messages=[{"role": "user", "content": "hello"}],
        **({"tools": [ANTHROPIC_TOOL]} if tools else {}),  # type: ignore[arg-type]
    ) as stream:
        text = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    if tools:
        (block,) = final.content
        assert block.type == "tool_use" and block.input == ARGUMENTS
        assert final.stop_reason == "tool_use"
    else:
        assert "".join(text) == "Hello from the stand-in" and final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 7
    assert gateway.openai.requests[0].json["model"] == "llama-3-8b"


async def test_a_field_the_provider_cannot_carry_is_400_naming_it(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    with pytest.raises(openai.BadRequestError) as raised:
        await openai_client(gateway.base).chat.completions.create(
            model="claude-sonnet-4-5",
            messages=[{"role": "user", "content": "hi"}],
            logprobs=True,
        )
    assert "logprobs" in str(raised.value)
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{gateway.base}/v1/messages",
            json={"model": "gpt-4o-mini", "max_tokens": 5, "messages": [], "top_k": 2},
        )
    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert "top_k" in answer.json()["error"]["message"]
    assert not gateway.openai.requests and not gateway.anthropic.requests
