"""The MCP endpoint's transport rules, driven with raw httpx: each refusal has its status and a
JSON-RPC error naming the problem, and the process and other sessions go on."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fixtures.mcp_gateway import McpGateway, StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, files

LIST = {"jsonrpc": "2.0", "id": 7, "method": "tools/list"}


async def gateway_and_session(
    start_mcp: StartMcp, mcp_servers: ServeMcp, http: httpx.AsyncClient, spec: str = ""
) -> tuple[McpGateway, str]:
    disk = await mcp_servers(files())
    gateway = await start_mcp(spec + targets(files=disk.url))
    return gateway, await initialize(http, gateway.url)


async def still_serves(http: httpx.AsyncClient, gateway: McpGateway, session: str) -> None:
    response = await http.post(gateway.url, headers=mcp_headers(session), json=LIST)
    assert response.status_code == 200
    assert [t["name"] for t in response.json()["result"]["tools"]] == ["echo", "file0", "file1"]


def error_of(response: httpx.Response) -> str:
    body: dict[str, Any] = response.json()
    assert body["jsonrpc"] == "2.0"
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("headers", "status", "named"),
    [
        (
            {"accept": "application/json"},
            406,
            "Accept 'application/json' lacks text/event-stream (wildcards such as */* do not "
            "count); Accept must list application/json and text/event-stream",
        ),
        ({"accept": "text/event-stream"}, 406, "lacks application/json"),
        # What curl and a browser's fetch send unless told: a media range, not the types.
        ({"accept": "*/*"}, 406, "Accept '*/*' lacks application/json and text/event-stream"),
        ({"accept": "application/*, text/*"}, 406, "lacks application/json and text/event-stream"),
        (
            {"accept": "application/json, text/event-stream;q=0"},
            406,
            "lacks text/event-stream",
        ),
        ({"accept": ""}, 406, "no Accept header lacks application/json and text/event-stream"),
        ({"content-type": "text/plain"}, 415, "Content-Type must be application/json"),
        ({"mcp-protocol-version": "1999-01-01"}, 400, "MCP-Protocol-Version '1999-01-01'"),
    ],
)
async def test_a_post_breaking_a_header_rule_is_refused_naming_it(
    start_mcp: StartMcp,
    mcp_servers: ServeMcp,
    headers: dict[str, str],
    status: int,
    named: str,
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        gateway, session = await gateway_and_session(start_mcp, mcp_servers, http)
        response = await http.post(
            gateway.url, headers=mcp_headers(session) | headers, content=b'{"jsonrpc": "2.0"}'
        )
        assert response.status_code == status
        assert named in error_of(response)
        await still_serves(http, gateway, session)


@pytest.mark.parametrize(
    ("body", "code", "named"),
    [
        (b"{not json", -32700, "the body is not JSON"),
        (b"[]", -32600, "batches are not supported"),
        (b'{"id": 1, "method": "tools/list"}', -32600, "not a JSON-RPC 2.0 message"),
        (b'{"jsonrpc": "2.0", "id": [1], "method": "x"}', -32600, "id: expected"),
    ],
)
async def test_a_body_that_is_no_message_is_400(
    start_mcp: StartMcp, mcp_servers: ServeMcp, body: bytes, code: int, named: str
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        gateway, session = await gateway_and_session(start_mcp, mcp_servers, http)
        response = await http.post(gateway.url, headers=mcp_headers(session), content=body)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == code
        assert named in error_of(response)
        await still_serves(http, gateway, session)


async def test_sessions_missing_forged_or_ended(start_mcp: StartMcp, mcp_servers: ServeMcp) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        gateway, session = await gateway_and_session(start_mcp, mcp_servers, http)
        other = await initialize(http, gateway.url)
        missing = await http.post(gateway.url, headers=mcp_headers(), json=LIST)
        assert missing.status_code == 400
        assert "Mcp-Session-Id header is required" in error_of(missing)
        for forged in ("nonsense", session[:-4] + "AAAA", "A" * 80):
            unknown = await http.post(gateway.url, headers=mcp_headers(forged), json=LIST)
            assert unknown.status_code == 404, forged
            assert "unknown session" in error_of(unknown)

        ended = await http.delete(gateway.url, headers=mcp_headers(session))
        assert ended.status_code == 200
        after = await http.post(gateway.url, headers=mcp_headers(session), json=LIST)
        assert after.status_code == 404
        assert "the session was ended" in error_of(after)
        await still_serves(http, gateway, other)


async def test_methods_other_than_post_get_delete_are_405(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        gateway, session = await gateway_and_session(start_mcp, mcp_servers, http)
        for method in ("PUT", "PATCH"):
            response = await http.request(method, gateway.url, headers=mcp_headers(session))
            assert response.status_code == 405
            assert response.headers["allow"] == "GET, POST, DELETE"
            assert f"method {method} is not allowed" in error_of(response)
        for accept in ("application/json", "*/*"):
            get = await http.get(gateway.url, headers=mcp_headers(session, accept=accept))
            assert get.status_code == 406
            assert error_of(get) == (
                f"Accept {accept!r} lacks text/event-stream (wildcards such as */* do not "
                "count); Accept must list text/event-stream"
            )
        await still_serves(http, gateway, session)


async def test_a_message_over_the_cap_is_413(start_mcp: StartMcp, mcp_servers: ServeMcp) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        gateway, session = await gateway_and_session(
            start_mcp, mcp_servers, http, "maxMessageBytes: 1024\n"
        )
        call = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "x" * 2000}},
        }
        response = await http.post(gateway.url, headers=mcp_headers(session), json=call)
        assert response.status_code == 413
        assert error_of(response) == "the message is over the cap of 1024 bytes"
        await still_serves(http, gateway, session)


async def test_an_unknown_method_is_a_json_rpc_error(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        gateway, session = await gateway_and_session(start_mcp, mcp_servers, http)
        response = await http.post(
            gateway.url,
            headers=mcp_headers(session),
            json={"jsonrpc": "2.0", "id": "x", "method": "tools/juggle"},
        )
        assert response.status_code == 200
        assert response.json() == {
            "jsonrpc": "2.0",
            "id": "x",
            "error": {"code": -32601, "message": "Method not found: tools/juggle"},
        }


@pytest.mark.parametrize(
    ("headers", "status", "named"),
    [
        ({"mcp-method": "tools/list"}, 400, "Mcp-Method header 'tools/list' does not match"),
        ({"mcp-name": "files_file0"}, 400, "Mcp-Name header 'files_file0' does not match"),
        ({"mcp-name": "=?base64?ZmlsZXNfZmlsZTA=?="}, 400, "does not match the body's name"),
        ({"mcp-name": "=?base64?!!?="}, 400, "Mcp-Name: bad base64 form"),
        ({"mcp-method": "tools/call", "mcp-name": "echo"}, 200, ""),
        ({"mcp-name": "=?base64?ZWNobw==?="}, 200, ""),  # "echo"
    ],
)
async def test_mcp_method_and_name_headers_must_match_the_body(
    start_mcp: StartMcp,
    mcp_servers: ServeMcp,
    headers: dict[str, str],
    status: int,
    named: str,
) -> None:
    call = {
        "jsonrpc": "2.0",
        "id": 3,
        "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "y"}},
    }
    async with httpx.AsyncClient(timeout=10) as http:
        gateway, session = await gateway_and_session(start_mcp, mcp_servers, http)
        response = await http.post(gateway.url, headers=mcp_headers(session) | headers, json=call)
        assert response.status_code == status
        if status == 400:
            assert response.json()["error"]["code"] == -32020
            assert named in error_of(response)
        else:
            assert response.json()["result"]["content"][0]["text"] == "files: y"
