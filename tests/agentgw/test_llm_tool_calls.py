"""The tool calls an LLM answer asks for are kept, under the caller and with the traceparent of
the request's span, for the MCP call that carries one out (``agentgw.toolcalls``): from relayed
and translated answers, streamed and whole, asked by the ``openai`` and ``anthropic`` SDKs. The
providers are local stand-ins for the hosted APIs (tests/fixtures/llm_providers.py)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

import gateway.plugins
from agentgw.toolcalls import ToolCallLedger
from tests.fixtures.llm_gateway import DEFAULT_BACKEND, StartLlm
from tests.fixtures.llm_providers import ARGUMENTS

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADERS = {"x-agent-id": "planner", "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}
TOOL = {
    "type": "function",
    "function": {
        "name": "weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def ledger() -> ToolCallLedger:
    state = gateway.plugins._REGISTRY.states["agentgw.toolcalls"]
    assert isinstance(state, ToolCallLedger)
    return state


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-x"])  # relayed, translated
async def test_an_openai_clients_answer_with_tool_calls_is_remembered(
    start_llm: StartLlm, model: str, stream: bool
) -> None:
    gateway = await start_llm(DEFAULT_BACKEND)
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key="-", max_retries=0)
    answer = await client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[TOOL],  # type: ignore[list-item]
        stream=stream,
        extra_headers=HEADERS,
    )
    if stream:
        [chunk async for chunk in answer]  # type: ignore[union-attr]
    assert ledger().claim("agent:someone-else", "weather", ARGUMENTS) is None
    asked = ledger().claim("agent:planner", "weather", ARGUMENTS)
    assert asked is not None and asked.call_id in ("call_1", "toolu_1")
    # The gateway's span: the client's trace, a span of its own.
    assert asked.traceparent[3:35] == TRACE and asked.traceparent[36:52] != "00f067aa0ba902b7"
    assert len(ledger()) == 0


async def test_an_anthropic_clients_streamed_tool_use_is_remembered(start_llm: StartLlm) -> None:
    gateway = await start_llm(DEFAULT_BACKEND)
    client = anthropic.AsyncAnthropic(base_url=gateway.base, api_key="-", max_retries=0)
    tool = {"name": "weather", "input_schema": {"type": "object"}}
    async with client.messages.stream(
        model="claude-x",
        max_tokens=64,
        messages=[{"role": "user", "content": "weather in Paris?"}],
        tools=[tool],  # type: ignore[list-item]
        extra_headers=HEADERS,
    ) as stream:
        await stream.get_final_message()
    asked = ledger().claim("agent:planner", "weather", ARGUMENTS)
    assert asked is not None and asked.traceparent[3:35] == TRACE


async def test_without_a_caller_nothing_is_kept(start_llm: StartLlm) -> None:
    gateway = await start_llm(DEFAULT_BACKEND)
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [TOOL],
    }
    async with httpx.AsyncClient(timeout=10) as http:  # no key, no x-agent-id
        answer = await http.post(f"{gateway.base}/v1/chat/completions", json=body)
    assert answer.json()["choices"][0]["message"]["tool_calls"]
    assert len(ledger()) == 0
