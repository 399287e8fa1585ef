"""A2A agents through the gateway with the real ``a2a-sdk`` client: cards rewritten to point at
the gateway, several agents at ``<path>/<agent>/`` and a catalog at ``<path>/agents``, messages
and streamed tasks relayed, calls counted by method and outcome and answers by task state, each
request's span (exported over OTLP to a stand-in collector) naming the agent, the method, the
task's state and a JSON-RPC error's code."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from a2a.client import create_client
from a2a.types import Message, Part, Role, SendMessageRequest

from tests.fixtures.a2a_agents import ServeAgent
from tests.fixtures.mcp_gateway import StartMcp
from tests.fixtures.otlp import Collector, collector, received_spans  # noqa: F401  (fixture)
from tests.fixtures.proxy import wait_for


def a2a_config(**agents: str) -> str:
    lines = "\n".join(f"  - {{name: {name}, url: '{url}'}}" for name, url in agents.items())
    return f"""---
apiVersion: agents.ambient.dev/v1alpha1
kind: A2ABackend
metadata: {{name: agents}}
spec:
  agents:
{lines}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: a2a}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /a2a}}}}]
    backendRefs: [{{group: agents.ambient.dev, kind: A2ABackend, name: agents}}]
"""


MCP_SPEC = "targets:\n- {name: none, streamableHTTP: {url: 'http://127.0.0.1:9/mcp'}}\n"


def ask(text: str) -> SendMessageRequest:
    return SendMessageRequest(
        message=Message(role=Role.ROLE_USER, message_id=f"m-{text}", parts=[Part(text=text)])
    )


def span_attributes(server: Collector) -> list[dict[str, Any]]:
    """The attributes of every span the collector received that names an A2A agent."""
    spans = [{a.key: a.value for a in span.attributes} for span in received_spans(server)]
    return [
        {k: getattr(v, v.WhichOneof("value")) for k, v in attrs.items()}
        for attrs in spans
        if "a2a.agent" in attrs
    ]


async def test_cards_point_at_the_gateway_and_the_sdk_client_goes_through_it(
    start_mcp: StartMcp,
    a2a_agents: ServeAgent,
    collector: Collector,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    echo, tasks = await a2a_agents("echo"), await a2a_agents("tasks", streaming_task=True)
    gateway = await start_mcp(MCP_SPEC, a2a_config(echo=echo.url, tasks=tasks.url))
    base = f"http://127.0.0.1:{gateway.port}/a2a"
    async with httpx.AsyncClient(timeout=10) as http:
        card = (await http.get(f"{base}/echo/.well-known/agent-card.json")).json()
        assert [i["url"] for i in card["supportedInterfaces"]] == [f"{base}/echo/"]
        catalog = (await http.get(f"{base}/agents")).json()
        assert [(c["name"], c["supportedInterfaces"][0]["url"]) for c in catalog] == [
            ("echo", f"{base}/echo/"),
            ("tasks", f"{base}/tasks/"),
        ]
        missing = await http.get(f"{base}/nobody/x")
        assert missing.status_code == 404 and "agents: echo, tasks" in missing.json()["error"]
        unknown = await http.post(
            f"{base}/echo/",
            json={"jsonrpc": "2.0", "id": 1, "method": "NoSuchMethod", "params": {}},
            headers={"a2a-version": "1.0"},
        )
        code = unknown.json()["error"]["code"]

    client = await create_client(f"{base}/echo/")
    chunks: list[Any] = [chunk async for chunk in client.send_message(ask("hi"))]
    assert [p.text for c in chunks for p in c.message.parts] == ["echo: hi"]

    streamed = await create_client(f"{base}/tasks/")
    events = [chunk async for chunk in streamed.send_message(ask("work"))]
    kinds = [chunk.WhichOneof("payload") for chunk in events]
    assert kinds[0] == "task" and "artifact_update" in kinds and "status_update" in kinds
    artifacts = [c.artifact_update.artifact for c in events if c.HasField("artifact_update")]
    assert [p.text for a in artifacts for p in a.parts] == ["echo: work"]

    families = await gateway.metrics()
    counted = {
        (s.labels["agent"], s.labels["method"], s.labels["outcome"]): s.value
        for s in families["a2a_requests"].samples
        if s.name == "a2a_requests_total"
    }
    assert counted[("echo", "card", "ok")] >= 1
    assert counted[("echo", "SendStreamingMessage", "ok")] == 1
    assert counted[("tasks", "SendStreamingMessage", "ok")] == 1
    assert counted[("echo", "NoSuchMethod", "error")] == 1
    states = {
        (s.labels["agent"], s.labels["state"]): s.value
        for s in families["a2a_task_states"].samples
        if s.name == "a2a_task_states_total"
    }
    assert states == {("tasks", "completed"): 1}  # the echo agent answers with messages, no task

    def streamed_spans() -> list[dict[str, Any]]:
        return [a for a in span_attributes(collector) if a.get("a2a.agent") == "tasks"]

    await wait_for(lambda: len(streamed_spans()) == 1, timeout=10)
    (span,) = streamed_spans()
    assert (span["a2a.method"], span["a2a.task.state"]) == ("SendStreamingMessage", "completed")
    await wait_for(
        lambda: [a for a in span_attributes(collector) if a.get("a2a.method") == "NoSuchMethod"],
        timeout=10,
    )
    (failed,) = [a for a in span_attributes(collector) if a.get("a2a.method") == "NoSuchMethod"]
    assert failed["error.type"] == str(code)


async def test_an_unreachable_agent_is_502_naming_it(
    start_mcp: StartMcp, a2a_agents: ServeAgent
) -> None:
    gateway = await start_mcp(MCP_SPEC, a2a_config(gone="http://127.0.0.1:9/"))
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"http://127.0.0.1:{gateway.port}/a2a/gone/",
            json={"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {}},
        )
    assert response.status_code == 502
    assert response.json()["error"].startswith("agent gone: connect to 127.0.0.1:9")
