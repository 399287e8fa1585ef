"""Per-caller tool-call budgets: calls per minute and calls at once, 429 with Retry-After
beyond them, each caller on its own budget."""

from __future__ import annotations

import asyncio

import httpx

from tests.fixtures.mcp_gateway import StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, Signals, weather

BUDGETS = "budgets: {toolCallsPerMinute: 2, concurrentToolCalls: 1}\n"


def call(id: int, tool: str, **arguments: object) -> dict[str, object]:
    params = {"name": tool, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}


async def test_calls_per_minute_per_caller(start_mcp: StartMcp, mcp_servers: ServeMcp) -> None:
    sky = await mcp_servers(weather())
    gateway = await start_mcp(BUDGETS + targets(weather=sky.url))
    async with httpx.AsyncClient(timeout=10) as http:
        session = await initialize(http, gateway.url)
        alice = mcp_headers(session, **{"x-agent-id": "alice"})
        for i in range(2):
            ok = await http.post(gateway.url, headers=alice, json=call(i, "echo", text="x"))
            assert ok.status_code == 200 and "weather: x" in ok.text
        over = await http.post(gateway.url, headers=alice, json=call(3, "echo", text="x"))
        assert over.status_code == 429
        assert 1 <= int(over.headers["retry-after"]) <= 60
        assert "tool call budget of 'alice' exhausted" in over.json()["error"]["message"]
        # Lists are not tool calls; another caller has a budget of its own.
        listed = await http.post(
            gateway.url, headers=alice, json={"jsonrpc": "2.0", "id": 4, "method": "tools/list"}
        )
        assert listed.status_code == 200
        bob = mcp_headers(session, **{"x-agent-id": "bob"})
        assert (
            await http.post(gateway.url, headers=bob, json=call(5, "echo", text="y"))
        ).is_success


async def test_concurrent_calls_per_caller(start_mcp: StartMcp, mcp_servers: ServeMcp) -> None:
    signals = Signals()
    sky = await mcp_servers(weather(signals=signals))
    gateway = await start_mcp(BUDGETS + targets(weather=sky.url))
    async with httpx.AsyncClient(timeout=10) as http:
        session = await initialize(http, gateway.url)
        carol = mcp_headers(session, **{"x-agent-id": "carol"})
        waiting = asyncio.create_task(http.post(gateway.url, headers=carol, json=call(1, "wait")))
        await asyncio.wait_for(signals.started.wait(), 10)
        second = await http.post(gateway.url, headers=carol, json=call(2, "echo", text="z"))
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        signals.release.set()
        assert "released" in (await waiting).text
        third = await http.post(gateway.url, headers=carol, json=call(3, "echo", text="z"))
        assert third.status_code == 200 and "weather: z" in third.text
