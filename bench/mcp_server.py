"""The MCP server ``python -m bench.mcp`` measures against: FastMCP, JSON answers, five tools.

Served by uvicorn as ``bench.mcp_server:app``; ``BENCH_MCP_NAME`` names the server.
"""

from __future__ import annotations

import os

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

app = server.streamable_http_app()
