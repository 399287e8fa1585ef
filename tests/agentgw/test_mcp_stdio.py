"""stdio targets: a child process per session beside a Streamable HTTP target, its own
environment only, stderr to the log, killed with its session, started again after it dies."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from tests.fixtures.mcp_gateway import McpGateway, StartMcp, initialize, mcp_headers
from tests.fixtures.mcp_servers import ServeMcp, weather

SERVER = Path(__file__).resolve().parents[1] / "fixtures" / "mcp_stdio_server.py"


def call(id: int, tool: str, **arguments: object) -> dict[str, object]:
    params = {"name": tool, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}


def text(response: httpx.Response) -> str:
    body = response.json()
    assert "result" in body, body
    return str(body["result"]["content"][0]["text"])


async def start(start_mcp: StartMcp, mcp_servers: ServeMcp, root: Path) -> McpGateway:
    sky = await mcp_servers(weather())
    return await start_mcp(
        f"""targets:
- {{name: weather, streamableHTTP: {{url: "{sky.url}"}}}}
- name: files
  stdio: {{command: "{sys.executable}", args: ["{SERVER}"], env: {{ROOT: "{root}"}}}}
"""
    )


async def test_a_stdio_target_serves_beside_an_http_one_with_its_own_environment(
    start_mcp: StartMcp, mcp_servers: ServeMcp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_ONLY_SECRET", "x")
    (tmp_path / "notes.txt").write_text("from the stdio server")
    gateway = await start(start_mcp, mcp_servers, tmp_path)
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gateway.url)
        headers = mcp_headers(session)
        listed = await http.post(
            gateway.url, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
        )
        names = [t["name"] for t in listed.json()["result"]["tools"]]
        assert {"files_read", "files_env", "weather_forecast"} <= set(names)
        read = await http.post(
            gateway.url, headers=headers, json=call(2, "files_read", path="notes.txt")
        )
        assert text(read) == "from the stdio server"
        for name, seen in (("ROOT", "set"), ("PATH", "set"), ("GATEWAY_ONLY_SECRET", "unset")):
            env = await http.post(
                gateway.url, headers=headers, json=call(3, "files_env", name=name)
            )
            assert text(env) == seen, name
        forecast = await http.post(
            gateway.url, headers=headers, json=call(4, "weather_forecast", city="Lyon")
        )
        assert "sunny in Lyon" in forecast.text  # an SSE answer, relayed as one
    assert "mcp stdio files: stdio server ready" in gateway.log_text()


async def test_each_session_has_its_child_and_delete_kills_it(
    start_mcp: StartMcp, mcp_servers: ServeMcp, tmp_path: Path
) -> None:
    gateway = await start(start_mcp, mcp_servers, tmp_path)
    async with httpx.AsyncClient(timeout=20) as http:
        first, second = await initialize(http, gateway.url), await initialize(http, gateway.url)
        pids = [
            int(
                text(
                    await http.post(gateway.url, headers=mcp_headers(s), json=call(1, "files_pid"))
                )
            )
            for s in (first, second)
        ]
        assert pids[0] != pids[1]
        assert (await http.delete(gateway.url, headers=mcp_headers(first))).status_code == 200
        with pytest.raises(ProcessLookupError):
            os.kill(pids[0], 0)
        os.kill(pids[1], 0)  # the other session's child runs on


async def test_a_child_that_died_is_started_again_after_its_back_off(
    start_mcp: StartMcp, mcp_servers: ServeMcp, tmp_path: Path
) -> None:
    gateway = await start(start_mcp, mcp_servers, tmp_path)
    async with httpx.AsyncClient(timeout=20) as http:
        session = await initialize(http, gateway.url)
        headers = mcp_headers(session)
        before = int(text(await http.post(gateway.url, headers=headers, json=call(1, "files_pid"))))
        crashed = await http.post(gateway.url, headers=headers, json=call(2, "files_crash"))
        assert "the server exited with 3" in crashed.json()["error"]["message"]
        refused = await http.post(gateway.url, headers=headers, json=call(3, "files_pid"))
        assert "the server died; restarting in" in refused.json()["error"]["message"]
        after = None
        for attempt in range(50):  # the first back-off is 0.5 s
            await asyncio.sleep(0.1)
            answer = (
                await http.post(gateway.url, headers=headers, json=call(4 + attempt, "files_pid"))
            ).json()
            if "result" in answer:
                after = int(answer["result"]["content"][0]["text"])
                break
        assert after is not None and after != before
    assert "mcp stdio files: the server exited with 3" in gateway.log_text()
