"""What upstreams send the client besides answers: progress, logs and sampling requests on a
call's SSE stream (ids rewritten, the client's answer routed back), list_changed on the GET
stream; cancellation reaching the owner; heartbeats while quiet; idle, not total, timeouts."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import orjson
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.context import RequestContext
from mcp.shared.exceptions import McpError

from tests.fixtures.mcp_gateway import StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, Signals, files, weather

# asyncio's loop and uvloop's (tests/fixtures/loops.py): the upstream client's transports differ.
BOTH_LOOPS = True


def texts(result: object) -> list[str]:
    return [c.text for c in getattr(result, "content", []) if isinstance(c, types.TextContent)]


async def test_progress_logs_and_sampling_reach_the_client_and_its_answer_goes_back(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    gateway = await start_mcp(targets(weather=sky.url, files=disk.url))
    logs: list[str] = []
    progress: list[tuple[float, float | None]] = []
    asked: list[Any] = []

    async def sample(
        context: RequestContext[ClientSession, Any], params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        asked.append(context.request_id)
        (message,) = params.messages
        assert isinstance(message.content, types.TextContent)
        reply = types.TextContent(type="text", text=message.content.text[::-1])
        return types.CreateMessageResult(role="assistant", content=reply, model="stub")

    async def log(params: types.LoggingMessageNotificationParams) -> None:
        logs.append(str(params.data))

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))

    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write, sampling_callback=sample, logging_callback=log) as session,
    ):
        await session.initialize()
        slow = await session.call_tool("weather_slow", {"steps": 3}, progress_callback=on_progress)
        assert texts(slow) == ["3 steps done"]
        assert progress == [(1, 3), (2, 3), (3, 3)]
        assert logs == ["step 1", "step 2", "step 3"]
        asked_twice = [
            await session.call_tool("weather_ask", {"question": q}) for q in ("abc", "xyz")
        ]
        assert [texts(r) for r in asked_twice] == [["model said: cba"], ["model said: zyx"]]
        # The upstream's ids, as the client saw them: the target, the id's type, the id.
        assert asked == ["weather/n/0", "weather/n/1"]


async def test_list_changed_reaches_the_client_on_the_get_stream(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    gateway = await start_mcp(targets(weather=sky.url, files=disk.url))
    changed = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            changed.set()

    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        assert "weather_grown" not in [t.name for t in (await session.list_tools()).tools]
        assert texts(await session.call_tool("weather_grow", {})) == ["grown"]
        await asyncio.wait_for(changed.wait(), 10)
        assert "weather_grown" in [t.name for t in (await session.list_tools()).tools]
        assert texts(await session.call_tool("weather_grown", {})) == ["grown"]


async def test_cancellation_reaches_the_owner(start_mcp: StartMcp, mcp_servers: ServeMcp) -> None:
    signals = Signals()
    sky, disk = await mcp_servers(weather(signals=signals)), await mcp_servers(files())
    gateway = await start_mcp(targets(weather=sky.url, files=disk.url))
    async with httpx.AsyncClient(timeout=10) as http:
        session = await initialize(http, gateway.url)
        call = {
            "jsonrpc": "2.0",
            "id": 41,
            "method": "tools/call",
            "params": {"name": "weather_wait", "arguments": {}},
        }
        pending = asyncio.create_task(
            http.post(gateway.url, headers=mcp_headers(session), json=call)
        )
        await asyncio.wait_for(signals.started.wait(), 10)
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": 41, "reason": "changed my mind"},
        }
        sent = await http.post(gateway.url, headers=mcp_headers(session), json=cancel)
        assert sent.status_code == 202
        await asyncio.wait_for(signals.cancelled.wait(), 10)
        pending.cancel()
        await asyncio.gather(pending, return_exceptions=True)


async def test_heartbeats_keep_a_quiet_stream_alive(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    signals = Signals()
    sky = await mcp_servers(weather(signals=signals))
    gateway = await start_mcp("heartbeatSeconds: 0.05\n" + targets(weather=sky.url))
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "wait"}}
    async with httpx.AsyncClient(timeout=10) as http:
        session = await initialize(http, gateway.url)
        async with http.stream(
            "POST", gateway.url, headers=mcp_headers(session), json=call
        ) as response:
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["x-accel-buffering"] == "no"
            lines = response.aiter_lines()
            heartbeats = 0
            async for line in lines:
                if line == ": keep-alive":
                    heartbeats += 1
                    if heartbeats == 2:
                        signals.release.set()
                elif line.startswith("data: "):
                    answer = orjson.loads(line[6:])
                    break
    assert heartbeats >= 2
    assert answer["id"] == 1
    assert answer["result"]["content"][0]["text"] == "released"


async def test_timeouts_are_idle_not_total(start_mcp: StartMcp, mcp_servers: ServeMcp) -> None:
    signals = Signals()
    sky = await mcp_servers(weather(signals=signals))
    gateway = await start_mcp("idleTimeoutSeconds: 0.5\n" + targets(weather=sky.url))
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        # 1.2 s in all, never 0.5 s without a message: it completes.
        moving = await session.call_tool("slow", {"steps": 4, "pause": 0.3})
        assert texts(moving) == ["4 steps done"]
        # Silent for longer than the idle timeout: the call fails, naming the target.
        try:
            await session.call_tool("wait", {})
        except McpError as exc:
            assert exc.error.message == "target weather: idle timeout: the upstream stopped sending"
        else:
            raise AssertionError("a silent upstream did not time out")
        assert texts(await session.call_tool("forecast", {"city": "Pisa"})) == ["sunny in Pisa"]
