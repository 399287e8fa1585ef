"""JWT authentication (JWKS from a ConfigMap, 401 with an RFC 9728 challenge) and CEL
authorization: denied tools are absent from lists and unknown to calls; sessions are bound to
the token's subject."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from mcp.types import TextContent
from pydantic import ValidationError

from agentgw.mcp.api import MCPBackend
from tests.fixtures.mcp_gateway import McpGateway, StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, files, tool_names, weather

ISSUER = "https://idp.example"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWK = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(KEY.public_key())) | {
    "kid": "k1",
    "alg": "RS256",
    "use": "sig",
}
AUTH = """authentication:
  jwt:
    issuer: "https://idp.example"
    audiences: [tools]
    jwks: {configMapRef: {name: idp-jwks, key: jwks.json}}
"""
RULES = """authorization:
  rules:
  - 'mcp.tool.name == "weather_forecast"'
  - 'jwt.sub == "alice" && mcp.tool.target == "files"'
  - 'mcp.tool.name == "weather_echo" && mcp.tool.arguments.text == "allowed"'
"""
EXTRA = f"""---
apiVersion: v1
kind: ConfigMap
metadata: {{name: idp-jwks}}
data:
  jwks.json: '{json.dumps({"keys": [JWK]})}'
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mcp-metadata}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /.well-known/oauth-protected-resource}}}}]
    backendRefs: [{{group: agents.ambient.dev, kind: MCPBackend, name: tools}}]
"""


def token(sub: str = "alice", key: Any = KEY, **claims: Any) -> str:
    body = {"iss": ISSUER, "aud": "tools", "sub": sub, "exp": int(time.time()) + 300} | claims
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": "k1"})


def texts(result: object) -> list[str]:
    return [c.text for c in getattr(result, "content", []) if isinstance(c, TextContent)]


async def start(start_mcp: StartMcp, mcp_servers: ServeMcp, rules: str = RULES) -> McpGateway:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    return await start_mcp(AUTH + rules + targets(weather=sky.url, files=disk.url), EXTRA)


async def test_no_token_is_401_pointing_at_the_metadata_the_gateway_serves(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    gateway = await start(start_mcp, mcp_servers)
    base = f"http://127.0.0.1:{gateway.port}"
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(gateway.url, headers=mcp_headers(), json={"jsonrpc": "2.0"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == (
            f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'
        )
        assert response.json()["error"]["message"] == "a bearer token is required"
        described = await http.get(f"{base}/.well-known/oauth-protected-resource/mcp")
        assert described.status_code == 200
        assert described.json() == {
            "resource": f"{base}/mcp",
            "authorization_servers": [ISSUER],
            "bearer_methods_supported": ["header"],
        }


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (token(exp=int(time.time()) - 3600), "Signature has expired"),
        (token(aud="other"), "Audience doesn't match"),
        (token(iss="https://evil.example"), "Invalid issuer"),
        (token(key=OTHER_KEY), "Signature verification failed"),
        ("not.a.jwt", "the token is malformed"),
    ],
)
async def test_an_invalid_token_is_401_naming_why(
    start_mcp: StartMcp, mcp_servers: ServeMcp, bad: str, named: str
) -> None:
    gateway = await start(start_mcp, mcp_servers)
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.post(
            gateway.url,
            headers=mcp_headers(authorization=f"Bearer {bad}"),
            json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"].endswith(', error="invalid_token"')
    assert named in response.json()["error"]["message"]


async def test_lists_show_only_allowed_tools_and_a_denied_call_is_an_unknown_tool(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    gateway = await start(start_mcp, mcp_servers)
    seen: dict[str, list[str]] = {}
    for who in ("alice", "bob"):
        http = httpx.AsyncClient(headers={"authorization": f"Bearer {token(who)}"}, timeout=10)
        async with (
            http,
            streamable_http_client(gateway.url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            seen[who] = tool_names(await session.list_tools())
            assert texts(await session.call_tool("weather_forecast", {"city": "Oslo"})) == [
                "sunny in Oslo"
            ]
            # The argument rule: allowed with this argument only.
            allowed = await session.call_tool("weather_echo", {"text": "allowed"})
            assert texts(allowed) == ["weather: allowed"]
            with pytest.raises(McpError) as denied:
                await session.call_tool("weather_echo", {"text": "other"})
            assert denied.value.error.message == "Unknown tool: weather_echo"
            if who == "bob":
                with pytest.raises(McpError) as hidden:
                    await session.call_tool("files_echo", {"text": "x"})
                assert hidden.value.error.code == -32602
                assert hidden.value.error.message == "Unknown tool: files_echo"
    assert seen["alice"] == ["files_echo", "files_file0", "files_file1", "weather_forecast"]
    assert seen["bob"] == ["weather_forecast"]


async def test_a_session_is_bound_to_its_subject(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    gateway = await start(start_mcp, mcp_servers)
    alice = httpx.AsyncClient(headers={"authorization": f"Bearer {token('alice')}"}, timeout=10)
    async with alice, httpx.AsyncClient(timeout=10) as bob:
        session = await initialize(alice, gateway.url)
        listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
        stolen = await bob.post(
            gateway.url,
            headers=mcp_headers(session, authorization=f"Bearer {token('bob')}"),
            json=listing,
        )
        assert stolen.status_code == 404
        assert "another principal" in stolen.json()["error"]["message"]
        own = await alice.post(gateway.url, headers=mcp_headers(session), json=listing)
        assert own.status_code == 200 and len(own.json()["result"]["tools"]) == 4


def test_a_rule_that_does_not_compile_is_refused_at_load_naming_it() -> None:
    with pytest.raises(ValidationError) as raised:
        MCPBackend.model_validate(
            {
                "metadata": {"name": "tools"},
                "spec": {
                    "targets": [{"name": "a", "streamableHTTP": {"url": "http://127.0.0.1:1/"}}],
                    "authorization": {"rules": ["true", "mcp.tool.name =="]},
                },
            }
        )
    assert "rules[1]: Failed to parse expression" in str(raised.value)
