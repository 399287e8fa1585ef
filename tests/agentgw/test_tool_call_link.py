"""An agent's tool call traced back to the LLM answer that asked for it: the answer passes
through an LLMBackend with a tool call, the same agent (``x-agent-id``) then calls that tool with
the same arguments through an MCPBackend, and the call's span links to the answer's span and
carries the tool call's id. Spans are exported over OTLP to a stand-in collector; the clients are
the ``openai`` and ``mcp`` SDKs; the LLM provider is a local stand-in of the hosted API and the
tool server a FastMCP server (tests/fixtures)."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.fixtures.llm_gateway import DEFAULT_BACKEND, StartLlm
from tests.fixtures.mcp_gateway import mcp_documents, targets
from tests.fixtures.mcp_servers import ServeMcp, weather
from tests.fixtures.otlp import Collector, collector, received_spans  # noqa: F401  (fixture)
from tests.fixtures.proxy import wait_for

TOOL = {
    "type": "function",
    "function": {
        "name": "forecast",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def spans_with(server: Collector, key: str) -> list[Any]:
    return [s for s in received_spans(server) if any(a.key == key for a in s.attributes)]


def attribute(span: Any, key: str) -> Any:
    (value,) = [a.value for a in span.attributes if a.key == key]
    return getattr(value, value.WhichOneof("value"))


async def call_forecast(base: str, agent: str) -> str:
    http = httpx.AsyncClient(headers={"x-agent-id": agent}, timeout=10)
    async with (
        http,
        streamable_http_client(f"{base}/mcp", http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        result = await session.call_tool("forecast", {"city": "Paris"})
        (content,) = result.content
        assert isinstance(content, TextContent)
        return content.text


async def test_the_tool_call_span_links_to_the_llm_answer_that_asked_for_it(
    start_llm: StartLlm,
    mcp_servers: ServeMcp,
    collector: Collector,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    tools = await mcp_servers(weather())
    gateway = await start_llm(DEFAULT_BACKEND, mcp_documents(targets(weather=tools.url)))

    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key="-", max_retries=0)
    answer = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[TOOL],  # type: ignore[list-item]
        extra_headers={"x-agent-id": "planner"},
    )
    (asked,) = answer.choices[0].message.tool_calls or []
    assert asked.function.name == "forecast"  # type: ignore[union-attr]

    assert await call_forecast(gateway.base, "someone-else") == "sunny in Paris"
    assert await call_forecast(gateway.base, "planner") == "sunny in Paris"
    assert await call_forecast(gateway.base, "planner") == "sunny in Paris"  # asked once only

    await wait_for(lambda: len(spans_with(collector, "gen_ai.tool.name")) == 3, timeout=10)
    (llm,) = spans_with(collector, "llm.provider")
    assert attribute(llm, "gen_ai.tool.calls") == 1
    calls = spans_with(collector, "gen_ai.tool.name")
    linked = [span for span in calls if span.links]
    (call,) = linked
    (link,) = call.links
    assert (link.trace_id, link.span_id) == (llm.trace_id, llm.span_id)
    assert {a.key: a.value.string_value for a in link.attributes} == {
        "gen_ai.tool.call.id": asked.id
    }
    assert attribute(call, "gen_ai.tool.call.id") == asked.id
    assert attribute(call, "mcp.method.name") == "tools/call"
    assert attribute(call, "mcp.target") == "weather"
    # mcp.session.id: a digest of the sealed id, the same on every request of one session.
    sessions = [attribute(span, "mcp.session.id") for span in calls]
    assert len(set(sessions)) == 3 and all(len(s) == 32 for s in sessions)
    await wait_for(
        lambda: len([s for s in spans_with(collector, "mcp.method.name")
                     if attribute(s, "mcp.method.name") == "initialize"]) == 3,
        timeout=10,
    )  # fmt: skip
    of_call_session = {
        attribute(span, "mcp.method.name")
        for span in spans_with(collector, "mcp.method.name")
        if span in spans_with(collector, "mcp.session.id")
        and attribute(span, "mcp.session.id") == attribute(call, "mcp.session.id")
    }
    assert {"initialize", "tools/call"} <= of_call_session
