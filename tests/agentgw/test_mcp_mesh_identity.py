"""The mesh's SPIFFE identity as the MCP caller: the gateway runs as the waypoint of Service
``echo`` (CA, two ztunnels and the waypoint as real processes on loopback, no netns needed:
the client reaches the Service through node-a's explicit-mode listener, which sends it over
HBONE mTLS as ``default/sleep``). A GAMMA route sends ``/mcp`` to an MCPBackend whose rules
read ``source.*``; budgets count against the SPIFFE id."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError

from tests.agentgw.test_mcp_auth import texts
from tests.fixtures.mcp_gateway import initialize, mcp_headers
from tests.fixtures.mcp_servers import ServeMcp, tool_names, weather
from tests.fixtures.waypoint_mesh import SLEEP, WaypointMesh


def mcp_docs(upstream: str) -> list[dict[str, Any]]:
    """An MCPBackend whose rules allow ``sleep``'s namespace one tool, and a GAMMA route on
    Service echo sending ``/mcp`` to it."""
    return [
        {
            "apiVersion": "agents.ambient.dev/v1alpha1",
            "kind": "MCPBackend",
            "metadata": {"name": "tools", "namespace": "default"},
            "spec": {
                "targets": [{"name": "weather", "streamableHTTP": {"url": upstream}}],
                "authorization": {
                    "rules": [
                        'source.principal == "cluster.local/ns/default/sa/sleep"'
                        ' && mcp.tool.name == "forecast"',
                        'source.namespace == "other" && mcp.tool.name == "echo"',
                    ]
                },
                "budgets": {"toolCallsPerMinute": 2},
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "mcp", "namespace": "default"},
            "spec": {
                "parentRefs": [{"group": "", "kind": "Service", "name": "echo", "port": 80}],
                "rules": [
                    {
                        "matches": [{"path": {"type": "PathPrefix", "value": "/mcp"}}],
                        "backendRefs": [
                            {"group": "agents.ambient.dev", "kind": "MCPBackend", "name": "tools"}
                        ],
                    }
                ],
            },
        },
    ]


@pytest.fixture
async def mesh(tmp_path: Path, mcp_servers: ServeMcp) -> AsyncIterator[WaypointMesh]:
    sky = await mcp_servers(weather())
    started = WaypointMesh(tmp_path, extra_docs=mcp_docs(sky.url))
    try:
        # The processes start in a thread: the upstream answers in this loop meanwhile.
        await asyncio.to_thread(started.start)
        yield started
    finally:
        await asyncio.to_thread(started.stop)


async def test_rules_see_the_callers_spiffe_id_and_budgets_count_against_it(
    mesh: WaypointMesh,
) -> None:
    url = f"{mesh.url}/mcp"
    async with (
        httpx.AsyncClient(timeout=10) as http,
        streamable_http_client(url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        # Only the tool the rule over source.principal allows is listed; the one for another
        # namespace is not.
        assert tool_names(await session.list_tools()) == ["forecast"]
        assert texts(await session.call_tool("forecast", {"city": "Oslo"})) == ["sunny in Oslo"]
        with pytest.raises(McpError) as hidden:
            await session.call_tool("echo", {"text": "x"})
        assert hidden.value.error.message == "Unknown tool: echo"
    # The allowed call and the denied one spent sleep's two calls a minute.
    async with httpx.AsyncClient(timeout=10) as http:
        session_id = await initialize(http, url)
        call = {"name": "forecast", "arguments": {"city": "Oslo"}}
        over = await http.post(
            url,
            headers=mcp_headers(session_id),
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call},
        )
    assert over.status_code == 429
    assert f"tool call budget of {SLEEP!r} exhausted" in over.json()["error"]["message"]
