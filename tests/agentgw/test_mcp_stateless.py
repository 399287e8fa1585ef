"""MCP 2026-07-28 (stateless) clients beside session clients on the same endpoint: discover,
lists and calls without a session, each header checked against the body, removed methods 404,
GET 405, an unsupported version -32022."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from tests.fixtures.mcp_gateway import McpGateway, StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, files, weather

V = "2026-07-28"
META = {"io.modelcontextprotocol/protocolVersion": V}


def modern(method: str, name: str | None = None, **more: str) -> dict[str, str]:
    headers = mcp_headers(**{"mcp-protocol-version": V, "mcp-method": method})
    if name is not None:
        headers["mcp-name"] = name
    return headers | more


def request(id: int, method: str, **params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id, "method": method, "params": {"_meta": META, **params}}


def answer(response: httpx.Response) -> dict[str, Any]:
    if response.headers["content-type"].startswith("text/event-stream"):
        lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        return dict(orjson.loads(lines[-1]))
    return dict(response.json())


async def start(start_mcp: StartMcp, mcp_servers: ServeMcp) -> McpGateway:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    return await start_mcp(targets(weather=sky.url, files=disk.url))


async def test_stateless_clients_discover_list_and_call_beside_session_clients(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    gateway = await start(start_mcp, mcp_servers)
    async with httpx.AsyncClient(timeout=10) as http:
        found = await http.post(
            gateway.url, headers=modern("server/discover"), json=request(1, "server/discover")
        )
        assert found.status_code == 200 and "mcp-session-id" not in found.headers
        discovered = found.json()["result"]
        assert discovered["supportedVersions"][:2] == [V, "2024-11-05"]
        assert "tools" in discovered["capabilities"]
        assert discovered["instructions"] == "[weather] Forecasts by city."

        listed = answer(
            await http.post(
                gateway.url, headers=modern("tools/list"), json=request(2, "tools/list")
            )
        )["result"]
        assert listed["resultType"] == "complete"
        assert (listed["ttlMs"], listed["cacheScope"]) == (0, "private")
        assert listed["_meta"]["io.modelcontextprotocol/serverInfo"]["name"] == "default/tools"
        assert {"weather_forecast", "files_file1"} <= {t["name"] for t in listed["tools"]}

        for id, tool, arguments, text in (
            (3, "weather_forecast", {"city": "Turku"}, "sunny in Turku"),  # an SSE answer
            (4, "files_echo", {"text": "now"}, "files: now"),  # a JSON answer
        ):
            called = answer(
                await http.post(
                    gateway.url,
                    headers=modern("tools/call", tool),
                    json=request(id, "tools/call", name=tool, arguments=arguments),
                )
            )
            assert called["id"] == id
            assert called["result"]["resultType"] == "complete"
            assert called["result"]["content"][0]["text"] == text

        # A session client on the same endpoint is unaffected.
        session = await initialize(http, gateway.url)
        legacy = await http.post(
            gateway.url,
            headers=mcp_headers(session),
            json={"jsonrpc": "2.0", "id": 9, "method": "tools/list"},
        )
        assert "resultType" not in legacy.json()["result"]


@pytest.mark.parametrize(
    ("headers", "body", "status", "code", "named"),
    [
        (
            mcp_headers(**{"mcp-protocol-version": V}),
            request(1, "tools/list"),
            400,
            -32020,
            "the Mcp-Method header is required",
        ),
        (
            modern("tools/list"),
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            400,
            -32602,
            "params._meta['io.modelcontextprotocol/protocolVersion'] is required",
        ),
        (
            modern("tools/list"),
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "tools/list",
                "params": {"_meta": {"io.modelcontextprotocol/protocolVersion": "2025-11-25"}},
            },
            400,
            -32020,
            "does not match params._meta '2025-11-25'",
        ),
        (
            modern("tools/call"),
            request(1, "tools/call", name="files_echo"),
            400,
            -32020,
            "the Mcp-Name header is required",
        ),
        (
            modern("tools/call", "files_file0"),
            request(1, "tools/call", name="files_echo"),
            400,
            -32020,
            "Mcp-Name header 'files_file0' does not match",
        ),
        (
            modern("initialize"),
            request(1, "initialize"),
            404,
            -32601,
            "Method not found: initialize (removed in 2026-07-28)",
        ),
        (
            modern("tools/list", **{"mcp-protocol-version": "2027-01-01"}),
            request(1, "tools/list"),
            400,
            -32022,
            "MCP-Protocol-Version '2027-01-01' is not supported",
        ),
    ],
)
async def test_stateless_requests_are_checked(
    start_mcp: StartMcp,
    mcp_servers: ServeMcp,
    headers: dict[str, str],
    body: dict[str, Any],
    status: int,
    code: int,
    named: str,
) -> None:
    gateway = await start(start_mcp, mcp_servers)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(gateway.url, headers=headers, json=body)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and named in error["message"]
    if code == -32022:
        assert error["data"]["requested"] == "2027-01-01" and V in error["data"]["supported"]


async def test_get_is_405_for_stateless_clients(start_mcp: StartMcp, mcp_servers: ServeMcp) -> None:
    gateway = await start(start_mcp, mcp_servers)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(
            gateway.url, headers={"accept": "text/event-stream", "mcp-protocol-version": V}
        )
    assert response.status_code == 405 and response.headers["allow"] == "POST"


async def test_failed_stateless_requests_carry_their_http_status(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    gateway = await start_mcp(targets(weather=sky.url, files=disk.url))
    async with httpx.AsyncClient(timeout=10) as http:

        async def post(id: int, method: str, tool: str | None = None) -> Any:
            params = {} if tool is None else {"name": tool, "arguments": {}}
            return await http.post(
                gateway.url, headers=modern(method, tool), json=request(id, method, **params)
            )

        assert (await post(1, "tools/list")).status_code == 200
        unknown = await post(2, "tools/call", "nope")
        assert unknown.status_code == 400
        assert unknown.json()["error"] == {"code": -32602, "message": "Unknown tool: nope"}
        no_method = await post(3, "foo/bar")
        assert no_method.status_code == 404
        assert no_method.json()["error"] == {"code": -32601, "message": "Method not found: foo/bar"}
        # A session client's failed call stays 200: its SDK ends the session on any other.
        session = await initialize(http, gateway.url)
        call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {"name": "nope"}}
        legacy = await http.post(gateway.url, headers=mcp_headers(session), json=call)
        assert legacy.status_code == 200
        assert legacy.json()["error"] == {"code": -32602, "message": "Unknown tool: nope"}
        await sky.stop()
        dead = await post(4, "tools/call", "weather_forecast")
        assert dead.status_code == 503
        assert dead.json()["error"]["code"] == -32603
        assert dead.json()["error"]["message"].startswith("target weather: cannot reach")
