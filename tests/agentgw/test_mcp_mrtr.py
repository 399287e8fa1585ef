"""MCP 2026-07-28 multi round-trip requests: a session-era upstream's sampling and elicitation
requests reach a stateless client as ``input_required`` results, and its retries' answers go back
to the parked upstream call. Raw httpx: the ``mcp`` SDK of the test extras (1.x) has no
2026-07-28 client."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from tests.fixtures.mcp_gateway import McpGateway, StartMcp, targets
from tests.fixtures.mcp_servers import ServeMcp, files, weather

V = "2026-07-28"
ASKS = {"sampling": {}, "elicitation": {}}


async def call(
    http: httpx.AsyncClient,
    gateway: McpGateway,
    id: int,
    tool: str,
    arguments: dict[str, Any],
    capabilities: dict[str, Any],
    **retry: Any,
) -> httpx.Response:
    meta = {
        "io.modelcontextprotocol/protocolVersion": V,
        "io.modelcontextprotocol/clientCapabilities": capabilities,
    }
    body = {
        "jsonrpc": "2.0",
        "id": id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments, "_meta": meta, **retry},
    }
    headers = {
        "accept": "application/json, text/event-stream",
        "content-type": "application/json",
        "mcp-protocol-version": V,
        "mcp-method": "tools/call",
        "mcp-name": tool,
    }
    return await http.post(gateway.url, headers=headers, json=body)


def final(response: httpx.Response) -> dict[str, Any]:
    """The last message of an SSE (or JSON) answer."""
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("text/event-stream"):
        lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: {")]
        return dict(orjson.loads(lines[-1]))
    return dict(response.json())


async def start(start_mcp: StartMcp, mcp_servers: ServeMcp) -> McpGateway:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    return await start_mcp(targets(weather=sky.url, files=disk.url))


async def test_upstream_questions_become_rounds_and_the_retries_answers_reach_the_upstream(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    gateway = await start(start_mcp, mcp_servers)
    goal = {"goal": "tea"}
    async with httpx.AsyncClient(timeout=10) as http:
        first = final(await call(http, gateway, 1, "weather_plan", goal, ASKS))
        assert first["id"] == 1
        result = first["result"]
        assert result["resultType"] == "input_required"
        assert result["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "default/tools"
        ((key, asked),) = result["inputRequests"].items()
        assert key.startswith("weather/n/")  # the upstream's request id, namespaced by target
        assert asked["method"] == "sampling/createMessage"
        assert asked["params"]["messages"][0]["content"]["text"] == "plan: tea"

        sampled = {"role": "assistant", "content": {"type": "text", "text": "boil"}, "model": "m"}
        second = final(
            await call(
                http,
                gateway,
                2,
                "weather_plan",
                goal,
                ASKS,
                inputResponses={key: sampled},
                requestState=result["requestState"],
            )
        )
        assert second["id"] == 2
        result = second["result"]
        assert result["resultType"] == "input_required"  # the same call asks again
        ((key, asked),) = result["inputRequests"].items()
        assert asked["method"] == "elicitation/create"
        assert asked["params"]["message"] == "Run 'boil'?"

        approved = {"action": "accept", "content": {"ok": True}}
        third = final(
            await call(
                http,
                gateway,
                3,
                "weather_plan",
                goal,
                ASKS,
                inputResponses={key: approved},
                requestState=result["requestState"],
            )
        )
    assert third["id"] == 3
    assert third["result"]["resultType"] == "complete"
    assert third["result"]["content"][0]["text"] == "ran boil"


async def test_retries_are_checked_and_undeclared_questions_are_refused_upstream(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    gateway = await start(start_mcp, mcp_servers)
    question = {"goal": "abc"}
    async with httpx.AsyncClient(timeout=10) as http:
        # No sampling capability: the gateway answers the upstream -32601; the tool fails.
        refused = final(await call(http, gateway, 1, "weather_plan", question, {}))
        assert refused["result"]["resultType"] == "complete"
        assert refused["result"]["isError"] is True
        assert "the client does not support sampling/createMessage" in str(refused["result"])

        asked = final(await call(http, gateway, 2, "weather_plan", question, ASKS))["result"]
        state = asked["requestState"]
        (key,) = asked["inputRequests"]

        async def retry(id: int, arguments: dict[str, Any], **fields: Any) -> httpx.Response:
            return await call(http, gateway, id, "weather_plan", arguments, ASKS, **fields)

        tampered = await retry(3, question, requestState=state[:-4] + "AAAA", inputResponses={})
        assert tampered.status_code == 400
        assert tampered.json()["error"] == {
            "code": -32602,
            "message": "requestState: not sealed by this gateway",
        }
        moved = await retry(4, {"goal": "xyz"}, requestState=state, inputResponses={})
        assert moved.status_code == 400
        assert moved.json()["error"]["message"] == (
            "requestState: it belongs to another request (method, name and arguments must be "
            "the same)"
        )
        # A retry that answers nothing is asked the same again; the call is still parked.
        again = final(await retry(5, question, requestState=state, inputResponses={}))["result"]
        assert again["resultType"] == "input_required"
        assert list(again["inputRequests"]) == [key]
        sampled = {"role": "assistant", "content": {"type": "text", "text": "cba"}, "model": "m"}
        next_round = final(
            await retry(
                6, question, requestState=again["requestState"], inputResponses={key: sampled}
            )
        )
    assert next_round["id"] == 6
    (asked,) = next_round["result"]["inputRequests"].values()
    assert asked["params"]["message"] == "Run 'cba'?"  # the parked call got the answer
