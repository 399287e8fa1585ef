"""Legacy HTTP+SSE targets (MCP 2024-11-05) beside Streamable HTTP ones: tools merged, calls
answered over the target's stream, a restarted gateway opening a new stream unnoticed."""

from __future__ import annotations

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.fixtures.mcp_gateway import StartMcp
from tests.fixtures.mcp_servers import ServeMcp, files, tool_names, weather


def texts(result: object) -> list[str]:
    return [c.text for c in getattr(result, "content", []) if isinstance(c, TextContent)]


async def test_a_legacy_sse_target_serves_and_resumes_after_a_gateway_restart(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    legacy = await mcp_servers(weather(), transport="sse")
    disk = await mcp_servers(files())
    spec = f"""targets:
- {{name: legacy, sse: {{url: "{legacy.url}"}}}}
- {{name: files, streamableHTTP: {{url: "{disk.url}"}}}}
"""
    first = await start_mcp(spec)
    async with (
        streamable_http_client(first.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        assert init.instructions == "[legacy] Forecasts by city."
        names = tool_names(await session.list_tools())
        assert {"legacy_forecast", "legacy_echo", "files_echo"} <= set(names)
        assert texts(await session.call_tool("legacy_forecast", {"city": "Nice"})) == [
            "sunny in Nice"
        ]
        prompt = await session.get_prompt("legacy_greet", {"who": "Bo"})
        assert prompt.messages[0].content == TextContent(type="text", text="Hello Bo")
        await first.stop()
        await start_mcp(spec, port=first.port)
        # The new process has no stream for the session: it opens one, the client sees nothing.
        assert texts(await session.call_tool("legacy_echo", {"text": "again"})) == [
            "weather: again"
        ]
