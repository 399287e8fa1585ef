"""Targets answered in the gateway: something that is not an MCP server, offered as tools.

A :class:`ToolServer` (an OpenAPI service, an A2A agent) lists tools and runs a call;
:class:`LocalTarget` speaks MCP for it to the federation: ``initialize`` (tools only, no
session), ``tools/list``, ``tools/call``, ``ping``; other methods are -32601, which lists take
as "none of these".
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from agentgw.http1 import Http1Pool
from agentgw.mcp import jsonrpc
from agentgw.mcp.upstream import Reply, Sessionless


class ToolServer(Protocol):
    """Tools made of something else."""

    async def load(self, pool: Http1Pool) -> None:
        """Learn the tools, if they must be fetched (once)."""
        ...

    def tools(self) -> list[dict[str, Any]]:
        """The tools, as ``tools/list`` items."""
        ...

    async def call(self, pool: Http1Pool, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
        """Run the tool ``name``; a ``CallToolResult``."""
        ...


def text_result(text: str, error: bool = False, structured: Any = None) -> dict[str, Any]:
    """A ``CallToolResult`` of one text (and the structured value it shows, if any)."""
    result: dict[str, Any] = {"content": [{"type": "text", "text": text}], "isError": error}
    if isinstance(structured, dict):
        result["structuredContent"] = structured
    return result


@dataclass(frozen=True, slots=True)
class LocalTarget(Sessionless):
    """A :class:`ToolServer` as a federation target."""

    name: str
    url: str
    server: ToolServer

    @contextlib.asynccontextmanager
    async def exchange(
        self,
        pool: Http1Pool,
        message: dict[str, Any],
        session: str | None,
        version: str | None,
    ) -> AsyncIterator[Reply]:
        """Answer ``message`` here (nothing for notifications and responses)."""
        yield Reply(None, self._answer(pool, message))

    async def _answer(
        self, pool: Http1Pool, message: dict[str, Any]
    ) -> AsyncIterator[dict[str, Any]]:
        if "method" not in message or "id" not in message:
            return
        id, method = message["id"], message["method"]
        params = message.get("params") or {}
        if method == "initialize":
            yield jsonrpc.result(
                id,
                {
                    "protocolVersion": params.get("protocolVersion", "2025-06-18"),
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": self.name, "version": "ambient-gateway"},
                },
            )
        elif method == "tools/list":
            await self.server.load(pool)
            yield jsonrpc.result(id, {"tools": self.server.tools()})
        elif method == "tools/call":
            arguments = params.get("arguments") or {}
            if not isinstance(arguments, dict):
                yield jsonrpc.error(id, jsonrpc.INVALID_PARAMS, "arguments: expected an object")
                return
            name = str(params.get("name", ""))
            await self.server.load(pool)
            if not any(tool["name"] == name for tool in self.server.tools()):
                yield jsonrpc.error(id, jsonrpc.INVALID_PARAMS, f"Unknown tool: {name}")
                return
            yield jsonrpc.result(id, await self.server.call(pool, name, arguments))
        elif method == "ping":
            yield jsonrpc.result(id, {})
        else:
            yield jsonrpc.error(id, jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}")
