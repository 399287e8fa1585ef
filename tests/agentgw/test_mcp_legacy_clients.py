"""Old clients on the legacy HTTP+SSE transport at ``<path>/sse``: the SDK's ``sse_client``
federates like a Streamable HTTP client; an unknown stream token is 404."""

from __future__ import annotations

import httpx
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.types import TextContent

from tests.fixtures.mcp_gateway import StartMcp, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, files, tool_names, weather


def texts(result: object) -> list[str]:
    return [c.text for c in getattr(result, "content", []) if isinstance(c, TextContent)]


async def test_a_legacy_sse_client_gets_the_federated_server(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    gateway = await start_mcp(targets(weather=sky.url, files=disk.url))
    progress: list[float] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append(done)

    async with (
        sse_client(f"{gateway.url}/sse") as (read, write),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        assert init.serverInfo.name == "default/tools"
        assert "files_file1" in tool_names(await session.list_tools())
        assert texts(await session.call_tool("weather_forecast", {"city": "Graz"})) == [
            "sunny in Graz"
        ]
        slow = await session.call_tool("weather_slow", {"steps": 2}, progress_callback=on_progress)
        assert texts(slow) == ["2 steps done"]
        assert progress == [1, 2]
        assert texts(await session.call_tool("files_echo", {"text": "old"})) == ["files: old"]


async def test_an_unknown_stream_token_is_404(start_mcp: StartMcp, mcp_servers: ServeMcp) -> None:
    disk = await mcp_servers(files())
    gateway = await start_mcp(targets(files=disk.url))
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            f"{gateway.url}/messages?session_id=nope",
            headers=mcp_headers(),
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        )
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "unknown session: no such stream here"
