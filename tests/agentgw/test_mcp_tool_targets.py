"""Targets that are not MCP servers, offered as tools: an OpenAPI service (an operation a tool,
the call the HTTP request) and an A2A agent (send_message and its skills), through the SDK
client beside an MCP server."""

from __future__ import annotations

import json
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import TextContent

from tests.fixtures.a2a_agents import ServeAgent
from tests.fixtures.mcp_gateway import StartMcp
from tests.fixtures.mcp_servers import ServeMcp, weather
from tests.fixtures.petstore import DOCUMENT, Petstore


def texts(result: object) -> list[str]:
    return [c.text for c in getattr(result, "content", []) if isinstance(c, TextContent)]


def config_map(document: dict[str, Any]) -> str:
    return f"""---
apiVersion: v1
kind: ConfigMap
metadata: {{name: petstore}}
data:
  openapi.json: '{json.dumps(document)}'
"""


async def test_openapi_operations_become_tools_and_calls_become_requests(
    start_mcp: StartMcp, mcp_servers: ServeMcp, petstore: Petstore
) -> None:
    sky = await mcp_servers(weather())
    spec = f"""targets:
- {{name: weather, streamableHTTP: {{url: "{sky.url}"}}}}
- name: pets
  openAPI:
    schema: {{configMapRef: {{name: petstore, key: openapi.json}}}}
    baseURL: "{petstore.url}"
"""
    gateway = await start_mcp(spec, config_map(DOCUMENT))
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = {t.name: t for t in (await session.list_tools()).tools}
        assert {"pets_listPets", "pets_createPet", "pets_getPet", "weather_forecast"} <= set(tools)
        assert tools["pets_getPet"].inputSchema == {
            "type": "object",
            "properties": {"petId": {"type": "integer"}},
            "required": ["petId"],
        }
        created = tools["pets_createPet"].inputSchema
        assert created["required"] == ["body"]
        assert created["properties"]["body"]["properties"]["name"] == {"type": "string"}

        listed = await session.call_tool("pets_listPets", {"limit": 1, "x-trace": "t-1"})
        assert listed.structuredContent == {"pets": [{"id": 1, "name": "Rex", "kind": "dog"}]}
        assert petstore.headers_seen[-1]["x-trace"] == "t-1"
        made = await session.call_tool("pets_createPet", {"body": {"name": "Kit", "kind": "cat"}})
        assert not made.isError and made.structuredContent == {
            "id": 3,
            "name": "Kit",
            "kind": "cat",
        }
        got = await session.call_tool("pets_getPet", {"petId": 3})
        assert json.loads(texts(got)[0])["name"] == "Kit"
        missing = await session.call_tool("pets_getPet", {"petId": 99})
        assert missing.isError and texts(missing) == ['HTTP 404: {"error":"no such pet"}']


async def test_a_bad_openapi_document_is_refused_naming_the_field(
    start_mcp: StartMcp, mcp_servers: ServeMcp, petstore: Petstore
) -> None:
    spec = f"""targets:
- name: pets
  openAPI:
    schema: {{configMapRef: {{name: petstore, key: openapi.json}}}}
    baseURL: "{petstore.url}"
"""
    broken = {**DOCUMENT, "paths": {"/x": {"get": {"requestBody": {"$ref": "#/nowhere"}}}}}
    gateway = await start_mcp(spec, config_map(broken))
    assert (
        "ResolvedRefs=False BackendNotFound: MCPBackend default/tools: "
        "spec.targets[0].openAPI.schema: $ref '#/nowhere' points at nothing"
    ) in gateway.log_text()


async def test_an_a2a_agent_is_offered_as_tools(
    start_mcp: StartMcp, a2a_agents: ServeAgent
) -> None:
    echo, tasks = await a2a_agents("echo"), await a2a_agents("tasks", streaming_task=True)
    spec = f"""targets:
- {{name: echo, a2a: {{url: "{echo.url}"}}}}
- {{name: tasks, a2a: {{url: "{tasks.url}"}}}}
"""
    gateway = await start_mcp(spec)
    async with (
        streamable_http_client(gateway.url) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        tools = sorted(t.name for t in (await session.list_tools()).tools)
        assert tools == ["echo_echo", "echo_send_message", "tasks_echo", "tasks_send_message"]
        said = await session.call_tool("echo_send_message", {"text": "hello"})
        assert texts(said) == ["echo: hello"]
        done = await session.call_tool("tasks_echo", {"text": "work"})
        assert not done.isError and texts(done) == ["echo: work"]
