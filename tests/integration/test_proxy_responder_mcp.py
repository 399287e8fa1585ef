"""The MCP SDK on both ends: its streamable-HTTP server app as an in-gateway responder, its client
(initialize, list_tools, call_tool) through the gateway over HTTP/1.1 and HTTP/2."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.fastmcp import FastMCP
from mcp.types import TextContent

from tests.fixtures.responder_gateway import StartResponders

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)


def tools_server() -> Any:
    """A FastMCP server with two tools, as its streamable-HTTP ASGI app (served at /mcp)."""
    server = FastMCP("gateway-test")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    return server.streamable_http_app()


@pytest.mark.parametrize("protocol", ["http1", "http2"])
async def test_the_mcp_client_talks_to_an_mcp_server_app_through_the_gateway(
    start_responders: StartResponders, responder_plugin: dict[str, Any], protocol: str
) -> None:
    # The app's lifespan runs its session manager: requests fail unless the gateway started it.
    responder_plugin["tools"] = tools_server()
    gateway = await start_responders({"/mcp": "tools"})

    url = f"http://127.0.0.1:{gateway.port}/mcp"
    http = httpx.AsyncClient(http1=protocol == "http1", http2=protocol == "http2", timeout=30)
    async with (
        http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        assert init.serverInfo.name == "gateway-test"
        tools = await session.list_tools()
        assert sorted(tool.name for tool in tools.tools) == ["add", "shout"]
        result = await session.call_tool("add", {"a": 2, "b": 40})
        assert not result.isError
        (content,) = result.content
        assert isinstance(content, TextContent) and content.text == "42"
        shouted = await session.call_tool("shout", {"text": "through the gateway"})
        assert [c.text for c in shouted.content if isinstance(c, TextContent)] == [
            "THROUGH THE GATEWAY"
        ]
    entries = gateway.access_log()
    assert entries and all(e["destination"] == "tools.default.asgi" for e in entries)
    assert {e["status"] for e in entries} <= {200, 202}
