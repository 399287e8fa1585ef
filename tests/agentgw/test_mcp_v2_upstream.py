"""An ``mcp`` 2.x ``MCPServer`` (``tests/mcp2/server_tools.py``, in its own process and
environment) federated beside a FastMCP 1.x server, called by the 2.x ``Client`` in both eras:
the gateway speaks the session era to it as to any target."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.fixtures.mcp2_env import Spawn, run_script
from tests.fixtures.mcp_gateway import StartMcp, targets
from tests.fixtures.mcp_servers import ServeMcp, files
from tests.fixtures.uvicorn_apps import listening_socket

CALLS = [
    ["modern_add", {"a": 2, "b": 3}],
    ["modern_count", {"steps": 2}],
    ["modern_confirm", {"question": "Go?"}],
    ["files_echo", {"text": "hi"}],
]


async def test_a_v2_mcpserver_target_is_federated_and_called_in_both_eras(
    start_mcp: StartMcp, mcp_servers: ServeMcp, spawn_mcp2: Spawn, mcp2: Path
) -> None:
    sock = listening_socket()
    with sock:
        await spawn_mcp2("server_tools.py", str(sock.fileno()), fds=(sock.fileno(),))
        modern_url = f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    disk = await mcp_servers(files())
    gateway = await start_mcp(targets(modern=modern_url, files=disk.url))
    calls = json.dumps(CALLS)
    for seen in await asyncio.gather(
        run_script(mcp2, "client_calls.py", gateway.url, "legacy", calls),
        run_script(mcp2, "client_calls.py", gateway.url, "2026-07-28", calls),
    ):
        assert {"modern_add", "modern_count", "modern_confirm", "files_echo"} <= set(seen["tools"])
        assert seen["calls"] == [
            {"text": "5", "isError": False, "progress": []},
            {"text": "counted to 2", "isError": False, "progress": [1.0, 2.0]},
            {"text": "confirmed", "isError": False, "progress": []},
            {"text": "files: hi", "isError": False, "progress": []},
        ]
        assert seen["asked"] == ["Go?"]  # a session request, or an input_required round
        assert seen["completed"] == ["Ada", "Alan"]  # routed to the prompt's owner
