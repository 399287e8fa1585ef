"""``ambient gateway --workers 2`` serving an MCPBackend: a caller's tool calls per minute are one
budget across the workers (the shared bucket table), and a session opened by one worker is
served by the other (its sealed id)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.mcp_gateway import initialize, mcp_documents, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, weather

ROOT = Path(__file__).resolve().parents[2]


async def test_workers_share_a_callers_tool_calls_per_minute(
    tmp_path: Path, mcp_servers: ServeMcp
) -> None:
    sky = await mcp_servers(weather())
    port = free_port()
    config = tmp_path / "mcp.yaml"
    config.write_text(
        f"""apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
"""
        + mcp_documents("budgets: {toolCallsPerMinute: 3}\n" + targets(weather=sky.url))
    )
    gw = GatewayProcess([config], "--workers", "2", env={"PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        await asyncio.to_thread(gw.wait_ready, 30)
        async with httpx.AsyncClient(timeout=10) as http:
            session = await initialize(http, url)
        statuses = []
        # A connection each: SO_REUSEPORT spreads them over the workers (all twelve on one
        # worker: one chance in 2,048), each opening the session the other may have begun.
        for i in range(12):
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.post(
                    url,
                    headers=mcp_headers(session, **{"x-agent-id": "alice"}),
                    json={
                        "jsonrpc": "2.0",
                        "id": i,
                        "method": "tools/call",
                        "params": {"name": "echo", "arguments": {"text": "x"}},
                    },
                )
            statuses.append(answer.status_code)
        # One budget for the gateway: three calls a minute in all, whichever worker serves.
        assert statuses.count(200) == 3 and statuses.count(429) == 9, statuses
    finally:
        code = await asyncio.to_thread(gw.stop)
    assert code == 0, gw.output()
