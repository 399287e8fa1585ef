"""The MCP server ``python -m bench.mcp`` measures against: FastMCP, JSON answers, five tools.

Served by uvicorn as ``bench.mcp_server:app``; ``BENCH_MCP_NAME`` names the server. Under
``/remote`` the same server answers every request ``BENCH_MCP_DELAY_MS`` (20) later: a tool
server elsewhere on the network, whose answers wait on the network or its own I/O, not the CPU.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from mcp.server.fastmcp import FastMCP

server = FastMCP(os.environ.get("BENCH_MCP_NAME", "bench"), json_response=True, log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Echo a text."""
    return text


def _tool(i: int) -> None:
    def tool(x: int) -> int:
        return x + i

    server.add_tool(tool, name=f"add{i}", description=f"Add {i} to x.")


for _i in range(4):
    _tool(_i)

local = server.streamable_http_app()
DELAY = float(os.environ.get("BENCH_MCP_DELAY_MS", "20")) / 1000
REMOTE = "/remote"


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The server; under ``/remote``, DELAY later."""
    path = scope.get("path", "")
    if scope["type"] == "http" and path.startswith(REMOTE):
        await asyncio.sleep(DELAY)
        scope = dict(scope, path=path[len(REMOTE) :], raw_path=scope["raw_path"][len(REMOTE) :])
    await local(scope, receive, send)
