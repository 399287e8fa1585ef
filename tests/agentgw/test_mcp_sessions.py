"""Sessions that live in their ids: a restarted gateway resumes them, an upstream that forgot
its session is initialised again unnoticed, and a target failing under FailOpen or FailClosed."""

from __future__ import annotations

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import TextContent

from tests.fixtures.gateway_process import free_port
from tests.fixtures.mcp_gateway import StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, files, tool_names, weather


def texts(result: object) -> list[str]:
    return [c.text for c in getattr(result, "content", []) if isinstance(c, TextContent)]


def call(name: str, **arguments: object) -> dict[str, object]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": params}


async def test_a_restarted_gateway_resumes_the_session(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    spec = targets(weather=sky.url, files=disk.url)
    first = await start_mcp(spec)
    async with (
        streamable_http_client(first.url) as (read, write, session_id),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert texts(await session.call_tool("files_echo", {"text": "one"})) == ["files: one"]
        await first.stop()
        second = await start_mcp(spec, port=first.port)
        # The same client session, now served by a process that never saw it begin.
        assert texts(await session.call_tool("weather_echo", {"text": "two"})) == ["weather: two"]
        assert "files_file1" in tool_names(await session.list_tools())
        assert second.process is not first.process and session_id()


async def test_an_upstream_that_forgot_its_session_is_initialised_again(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    disk, sky = await mcp_servers(files()), await mcp_servers(weather())
    gateway = await start_mcp(targets(files=disk.url, weather=sky.url))
    async with httpx.AsyncClient(timeout=10) as http:
        session = await initialize(http, gateway.url)
        before = await http.post(
            gateway.url, headers=mcp_headers(session), json=call("files_echo", text="a")
        )
        assert before.json()["result"]["content"][0]["text"] == "files: a"
        await disk.stop()
        await mcp_servers(files(), port=disk.port)  # a new process: no session it knew
        for text in ("b", "c"):
            response = await http.post(
                gateway.url, headers=mcp_headers(session), json=call("files_echo", text=text)
            )
            assert response.status_code == 200
            assert response.json()["result"]["content"][0]["text"] == f"files: {text}"
    # Once per process: the replacement is remembered.
    assert gateway.log_text().count("target files: upstream session expired") == 1


async def test_fail_open_leaves_a_dead_target_out(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    disk = await mcp_servers(files())
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    gateway = await start_mcp("failureMode: FailOpen\n" + targets(files=disk.url, gone=dead))
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert tool_names(await session.list_tools()) == [
            "files_echo",
            "files_file0",
            "files_file1",
        ]
        assert texts(await session.call_tool("files_echo", {"text": "up"})) == ["files: up"]
    assert "target gone: cannot reach" in gateway.log_text()


async def test_fail_closed_refuses_the_session_naming_the_dead_target(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    disk = await mcp_servers(files())
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    gateway = await start_mcp(targets(files=disk.url, gone=dead))
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        with pytest.raises(McpError) as raised:
            await session.initialize()
        assert raised.value.error.code == -32603
        assert raised.value.error.message.startswith(f"target gone: cannot reach {dead}")


@pytest.mark.parametrize("mode", ["FailOpen", "FailClosed"])
async def test_a_target_dying_mid_session(
    start_mcp: StartMcp, mcp_servers: ServeMcp, mode: str
) -> None:
    disk, sky = await mcp_servers(files()), await mcp_servers(weather())
    gateway = await start_mcp(f"failureMode: {mode}\n" + targets(files=disk.url, weather=sky.url))
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        await session.list_tools()
        await sky.stop()
        if mode == "FailOpen":
            listed = await session.list_tools()
            assert tool_names(listed) == ["files_echo", "files_file0", "files_file1"]
            assert any("weather: left out" in o for o in (listed.meta or {})["dev.ambient/omitted"])
        else:
            with pytest.raises(McpError) as raised:
                await session.list_tools()
            assert raised.value.error.message.startswith("target weather: cannot reach")
        # Calls to the target alive go on; a call to the dead one names it.
        assert texts(await session.call_tool("files_echo", {"text": "on"})) == ["files: on"]
        with pytest.raises(McpError) as dead:
            await session.call_tool("weather_forecast", {"city": "x"})
        assert dead.value.error.message.startswith("target weather: cannot reach")
