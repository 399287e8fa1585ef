"""MCP federation through the gateway with the real SDK client (streamable_http_client and
ClientSession) against FastMCP servers on loopback: one virtual server whose lists merge every
target's every page, names prefixed per prefixMode, calls routed to the owner."""

from __future__ import annotations

import logging

import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import TextContent, TextResourceContents

from tests.fixtures.mcp_gateway import StartMcp, targets
from tests.fixtures.mcp_servers import ServeMcp, files, tool_names, weather

# asyncio's loop and uvloop's (tests/fixtures/loops.py): the upstream client's transports differ.
BOTH_LOOPS = True


def texts(result: object) -> list[str]:
    return [c.text for c in getattr(result, "content", []) if isinstance(c, TextContent)]


async def test_one_virtual_server_merges_every_targets_pages_and_routes_calls(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files(tools=4))
    gateway = await start_mcp(targets(weather=sky.url, files=disk.url))
    async with (
        streamable_http_client(gateway.url) as (read, write, session_id),
        ClientSession(read, write) as session,
    ):
        init = await session.initialize()
        assert init.serverInfo.name == "default/tools"
        assert init.capabilities.tools is not None and init.capabilities.prompts is not None
        assert init.instructions == "[weather] Forecasts by city."
        assert session_id()
        tools = await session.list_tools()
        # files pages its tools one a page: all four are there, not just the first page's.
        assert tool_names(tools) == [
            "files_echo",
            "files_file0",
            "files_file1",
            "files_file2",
            "weather_ask",
            "weather_echo",
            "weather_forecast",
            "weather_grow",
            "weather_halfway",
            "weather_plan",
            "weather_slow",
            "weather_wait",
        ]
        assert tools.nextCursor is None
        assert texts(await session.call_tool("weather_forecast", {"city": "Oslo"})) == [
            "sunny in Oslo"
        ]
        assert texts(await session.call_tool("files_echo", {"text": "hi"})) == ["files: hi"]
        assert texts(await session.call_tool("weather_echo", {"text": "hi"})) == ["weather: hi"]
        assert texts(await session.call_tool("files_file2", {})) == ["contents of file 2"]

        prompts = await session.list_prompts()
        assert [p.name for p in prompts.prompts] == ["weather_greet"]
        prompt = await session.get_prompt("weather_greet", {"who": "Ada"})
        assert prompt.messages[0].content == TextContent(type="text", text="Hello Ada")

        resources = await session.list_resources()
        uris = sorted(str(r.uri) for r in resources.resources)
        assert uris == ["files+file:///readme", "weather+weather://today"]
        read = await session.read_resource("weather+weather://today")  # type: ignore[arg-type]
        (content,) = read.contents
        assert isinstance(content, TextResourceContents) and content.text == "rain"
        assert str(content.uri) == "weather+weather://today"
        templates = await session.list_resource_templates()
        assert [t.uriTemplate for t in templates.resourceTemplates] == [
            "weather+weather://city/{city}"
        ]
        city = await session.read_resource("weather+weather://city/Rome")  # type: ignore[arg-type]
        assert [c.text for c in city.contents if isinstance(c, TextResourceContents)] == [
            "Rome: fog"
        ]


async def test_an_unknown_tool_is_a_json_rpc_error_naming_it(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    gateway = await start_mcp(targets(weather=sky.url, files=disk.url))
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        for name in ("weather_nothing", "nobody_echo", "echo"):
            with pytest.raises(McpError) as raised:
                await session.call_tool(name, {})
            assert raised.value.error.code == -32602
            assert raised.value.error.message == f"Unknown tool: {name}"
        # The session goes on.
        assert texts(await session.call_tool("files_echo", {"text": "x"})) == ["files: x"]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("Conditional", ["echo", "file0", "file1"]),
        ("Never", ["echo", "file0", "file1"]),
        ("Always", ["files_echo", "files_file0", "files_file1"]),
    ],
)
async def test_prefix_modes_with_one_target(
    start_mcp: StartMcp, mcp_servers: ServeMcp, mode: str, expected: list[str]
) -> None:
    disk = await mcp_servers(files())
    gateway = await start_mcp(f"prefixMode: {mode}\n" + targets(files=disk.url))
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert tool_names(await session.list_tools()) == expected
        assert texts(await session.call_tool(expected[0], {"text": "a"})) == ["files: a"]


async def test_never_reports_duplicates_and_routes_each_name_to_its_owner(
    start_mcp: StartMcp, mcp_servers: ServeMcp, caplog: pytest.LogCaptureFixture
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    gateway = await start_mcp("prefixMode: Never\n" + targets(weather=sky.url, files=disk.url))
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        assert tool_names(tools) == [
            "ask",
            "echo",
            "file0",
            "file1",
            "forecast",
            "grow",
            "halfway",
            "plan",
            "slow",
            "wait",
        ]
        omitted = (tools.meta or {})["dev.ambient/omitted"]
        assert omitted == ["files: tool 'echo' duplicates the one of target weather"]
        assert texts(await session.call_tool("echo", {"text": "a"})) == ["weather: a"]
        assert texts(await session.call_tool("file1", {})) == ["contents of file 1"]
        assert texts(await session.call_tool("forecast", {"city": "Bergen"})) == ["sunny in Bergen"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("duplicates the one of target weather" in w for w in warnings)


async def test_a_name_over_128_characters_once_prefixed_is_left_out_and_reported(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    long = "x" * 125
    server = files()
    server.add_tool(lambda: "long", name=long, description="A long name.")
    disk, sky = await mcp_servers(server), await mcp_servers(weather())
    gateway = await start_mcp(targets(files=disk.url, weather=sky.url))
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = await session.list_tools()
        assert all(len(t.name) <= 128 for t in tools.tools)
        assert f"files_{long}" not in tool_names(tools)
        assert (tools.meta or {})["dev.ambient/omitted"] == [
            f"files: tool '{long}': the prefixed name breaks the 1-128 [A-Za-z0-9_.-] rule"
        ]
