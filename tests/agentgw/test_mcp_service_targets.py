"""``backendRef`` targets: an MCP server behind a Service (EndpointSlices), each session on one
replica, TLS by a BackendTLSPolicy, a missing Service failing the target per failureMode and
named in the MCPBackend's status."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.server.fastmcp import FastMCP

from tests.agentgw.test_mcp_auth import texts
from tests.fixtures.backend_tls import config_map_yaml, policy_yaml
from tests.fixtures.certs import authority
from tests.fixtures.mcp_gateway import McpGateway, StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, tool_names, weather

INIT_PARAMS = {
    "protocolVersion": "2025-06-18",
    "capabilities": {},
    "clientInfo": {"name": "raw", "version": "0"},
}
SEARCH_ID = "spiffe://cluster.local/ns/default/sa/search"
OTHER_ID = "spiffe://cluster.local/ns/default/sa/other"
SEARCH = "- {name: search, backendRef: {name: search-svc, port: 80, path: /mcp}}\n"


def replica(name: str) -> FastMCP:
    """A server whose one tool says which replica answered."""
    mcp = FastMCP(name, instructions=f"replica {name}")

    @mcp.tool()
    def which() -> str:
        return name

    return mcp


def service_yaml(name: str, ports: list[int], port_name: str = "http") -> str:
    """Service ``name`` (port 80) and one EndpointSlice per replica port on 127.0.0.1."""
    docs = f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: {port_name}, port: 80, targetPort: 8080}}]
"""
    for i, port in enumerate(ports):
        docs += f"""---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{i}
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: {port_name}, port: {port}}}]
endpoints: [{{addresses: ["127.0.0.1"]}}]
"""
    return docs


async def which(gateway: McpGateway, calls: int) -> list[str]:
    """The replica each of ``calls`` calls in one new session reached."""
    async with (
        httpx.AsyncClient(timeout=10) as http,
        streamable_http_client(gateway.url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        return [texts(await session.call_tool("which", {}))[0] for _ in range(calls)]


async def test_each_session_sticks_to_one_replica_of_the_service(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    a, b = await mcp_servers(replica("a")), await mcp_servers(replica("b"))
    gateway = await start_mcp("targets:\n" + SEARCH, service_yaml("search-svc", [a.port, b.port]))
    first, second, third = await which(gateway, 3), await which(gateway, 3), await which(gateway, 3)
    # Every call of a session reached the replica its session began on; sessions take turns.
    for seen in (first, second, third):
        assert len(set(seen)) == 1, seen
    assert {first[0], second[0]} == {"a", "b"} and third[0] == first[0]


async def test_a_session_whose_replica_left_the_service_goes_on_on_another(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    a, b = await mcp_servers(replica("a")), await mcp_servers(replica("b"))
    gateway = await start_mcp("targets:\n" + SEARCH, service_yaml("search-svc", [a.port, b.port]))
    call = {"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "which", "arguments": {}}}

    async def reached(session: str, id: int) -> str:
        answer = await http.post(gateway.url, headers=mcp_headers(session), json=call | {"id": id})
        # The replica answers in SSE: its one event holds the result.
        data = next(line for line in answer.text.splitlines() if line.startswith("data:"))
        return str(json.loads(data[5:])["result"]["content"][0]["text"])

    async with httpx.AsyncClient(timeout=10) as http:
        sessions = [await initialize(http, gateway.url) for _ in range(2)]
        # Round robin from the first slice's replica.
        assert [await reached(s, i) for i, s in enumerate(sessions)] == ["a", "b"]
        # Replica a leaves the Service: its session is initialised again on b, unnoticed.
        slice_a = f"ports: [{{name: http, port: {a.port}}}]\nendpoints: "
        await gateway.reload(slice_a + '[{addresses: ["127.0.0.1"]}]', slice_a + "[]")
        after = [await reached(s, 10 + i) for i, s in enumerate(sessions)]
    assert after == ["b", "b"]


async def tls_replica(mcp_servers: ServeMcp, tmp_path: Path) -> int:
    """A replica serving TLS with a certificate of the test CA for ``search.example`` (and the
    URI SAN ``spiffe://cluster.local/ns/default/sa/search``); its port."""
    leaf = authority().issue("search.example", uris=(SEARCH_ID,))
    cert, key = tmp_path / "search.crt", tmp_path / "search.key"
    cert.write_bytes(leaf.cert_pem)
    key.write_bytes(leaf.key_pem)
    secure = await mcp_servers(replica("secure"), ssl_certfile=str(cert), ssl_keyfile=str(key))
    return secure.port


async def initialize_error(gateway: McpGateway) -> str:
    """The JSON-RPC error message of a raw ``initialize``."""
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            gateway.url,
            headers=mcp_headers(),
            json={"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": INIT_PARAMS},
        )
    return str(answer.json()["error"]["message"])


async def test_a_backend_tls_policy_puts_the_service_target_on_tls(
    start_mcp: StartMcp, mcp_servers: ServeMcp, tmp_path: Path
) -> None:
    port = await tls_replica(mcp_servers, tmp_path)
    policy = policy_yaml("search-tls", "search-svc", "search.example", ca="search-ca")
    extra = service_yaml("search-svc", [port]) + config_map_yaml("search-ca", authority().pem)
    gateway = await start_mcp("targets:\n" + SEARCH, extra + policy)
    assert await which(gateway, 1) == ["secure"]
    # The same Service without the policy is spoken to in cleartext, which the server refuses.
    await gateway.reload(policy, "")
    assert (await initialize_error(gateway)).startswith("target search: cannot reach http://")


async def test_the_policys_subject_alt_names_are_checked_on_the_service_target(
    start_mcp: StartMcp, mcp_servers: ServeMcp, tmp_path: Path
) -> None:
    port = await tls_replica(mcp_servers, tmp_path)
    extra = service_yaml("search-svc", [port]) + config_map_yaml("search-ca", authority().pem)
    wanted = policy_yaml(
        "search-tls", "search-svc", "search.example", ca="search-ca", sans=(("URI", SEARCH_ID),)
    )
    gateway = await start_mcp("targets:\n" + SEARCH, extra + wanted)
    assert await which(gateway, 1) == ["secure"]
    other = policy_yaml(
        "search-tls", "search-svc", "search.example", ca="search-ca", sans=(("URI", OTHER_ID),)
    )
    await gateway.reload(wanted, other)
    assert f"no subjectAltName matches URI {OTHER_ID}" in await initialize_error(gateway)


async def test_a_missing_service_fails_its_target_per_failure_mode_and_the_status_names_it(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky = await mcp_servers(weather())
    spec = targets(weather=sky.url) + SEARCH
    opened = await start_mcp("failureMode: FailOpen\n" + spec)
    async with (
        httpx.AsyncClient(timeout=10) as http,
        streamable_http_client(opened.url, http_client=http) as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        assert "weather_forecast" in tool_names(await session.list_tools())
    async with httpx.AsyncClient(timeout=10) as admin:
        dump = (await admin.get(f"http://127.0.0.1:{opened.admin_port}/config_dump")).json()
    (status,) = [s for s in dump["config"]["statuses"] if s["kind"] == "MCPBackend"]
    resolved = {c["type"]: c for c in status["parents"][0]["conditions"]}["ResolvedRefs"]
    assert (resolved["status"], resolved["reason"]) == ("False", "BackendNotFound")
    assert resolved["message"] == "spec.targets[1] search: Service default/search-svc not found"
    closed = await start_mcp(spec)
    async with httpx.AsyncClient(timeout=10) as http:
        failed = await http.post(
            closed.url,
            headers=mcp_headers(),
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": INIT_PARAMS,
            },
        )
    assert failed.json()["error"]["message"] == (
        "target search: spec.targets[1].backendRef: Service default/search-svc not found"
    )
