"""API keys from Secrets as MCP callers: a key names its caller for CEL rules (``apiKey.*``),
sessions and budgets; a bad or missing key is 401 with a Bearer challenge; with JWTs and keys
both configured either gets in; a rotated Secret is followed on reload."""

from __future__ import annotations

import base64

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from pydantic import ValidationError

from agentgw.mcp.api import MCPBackend
from tests.agentgw.test_mcp_auth import AUTH, EXTRA, texts, token
from tests.fixtures.mcp_gateway import StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, files, tool_names, weather

RESEARCH_KEY = "sk-research-0123456789"
OPS_KEY = "sk-ops-9876543210"
ROTATED_KEY = "sk-ops-rotated-55555"


def secret(name: str, value: str) -> str:
    encoded = base64.b64encode(value.encode()).decode()
    return f"""---
apiVersion: v1
kind: Secret
metadata: {{name: {name}}}
data: {{key: {encoded}}}
"""


KEYS = """authentication:
  apiKeys:
  - {name: research, secretRef: {name: research-key, key: key}, team: science}
  - {secretRef: {name: ops-key, key: key}, team: platform}
"""
KEY_RULES = """authorization:
  rules:
  - 'mcp.tool.name == "weather_forecast"'
  - 'apiKey.name == "ops-key" && apiKey.team == "platform" && mcp.tool.target == "files"'
"""
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t"}},
}
SECRETS = secret("research-key", RESEARCH_KEY) + secret("ops-key", OPS_KEY)


def client(key: str, header: str = "authorization") -> httpx.AsyncClient:
    value = f"Bearer {key}" if header == "authorization" else key
    return httpx.AsyncClient(headers={header: value}, timeout=10)


async def test_a_key_names_its_caller_in_rules_sessions_and_budgets(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    budget = "budgets: {toolCallsPerMinute: 1}\n"
    spec = KEYS + KEY_RULES + budget + targets(weather=sky.url, files=disk.url)
    gateway = await start_mcp(spec, SECRETS)
    seen: dict[str, list[str]] = {}
    # The research key as a bearer value, the ops key (named after its Secret) as x-api-key.
    for who, http in (("research", client(RESEARCH_KEY)), ("ops", client(OPS_KEY, "x-api-key"))):
        async with (
            http,
            streamable_http_client(gateway.url, http_client=http) as (read, write, _),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            seen[who] = tool_names(await session.list_tools())
            forecast = await session.call_tool("weather_forecast", {"city": "Oslo"})
            assert texts(forecast) == ["sunny in Oslo"]
    assert seen["research"] == ["weather_forecast"]
    assert seen["ops"] == ["files_echo", "files_file0", "files_file1", "weather_forecast"]
    async with client(RESEARCH_KEY) as research, client(OPS_KEY) as ops:
        session_id = await initialize(research, gateway.url)
        # Each key had its one call a minute: the budget counts against the key's name.
        call = {"name": "weather_forecast", "arguments": {"city": "Oslo"}}
        over = await research.post(
            gateway.url,
            headers=mcp_headers(session_id),
            json={"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": call},
        )
        assert over.status_code == 429
        assert "tool call budget of 'apiKey:research' exhausted" in over.json()["error"]["message"]
        # A session opened with one key is not another key's.
        stolen = await ops.post(
            gateway.url,
            headers=mcp_headers(session_id),
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
        )
        assert stolen.status_code == 404
        assert "another principal" in stolen.json()["error"]["message"]


async def test_a_missing_or_bad_key_is_401_with_a_bearer_challenge(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky = await mcp_servers(weather())
    gateway = await start_mcp(KEYS + targets(weather=sky.url), SECRETS)
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient(timeout=10) as http:
        missing = await http.post(gateway.url, headers=mcp_headers(), json=ping)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        assert missing.json()["error"]["message"] == (
            "an API key is required (x-api-key or Authorization: Bearer)"
        )
        for header in ({"authorization": "Bearer sk-wrong"}, {"x-api-key": "sk-wrong"}):
            bad = await http.post(gateway.url, headers=mcp_headers(**header), json=ping)
            assert bad.status_code == 401
            assert bad.headers["www-authenticate"] == 'Bearer error="invalid_token"'
            assert bad.json()["error"]["message"] == "the API key is not valid for this endpoint"
        # No authorization server to describe without JWTs.
        base = f"http://127.0.0.1:{gateway.port}"
        described = await http.get(f"{base}/.well-known/oauth-protected-resource/mcp")
        assert described.status_code == 404


async def test_with_jwt_and_keys_either_gets_in_and_neither_is_401(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky = await mcp_servers(weather())
    both = AUTH + "  apiKeys:\n  - {name: ops, secretRef: {name: ops-key, key: key}}\n"
    gateway = await start_mcp(both + targets(weather=sky.url), EXTRA + SECRETS)
    base = f"http://127.0.0.1:{gateway.port}"
    ping = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    async with httpx.AsyncClient(timeout=10) as http:
        missing = await http.post(gateway.url, headers=mcp_headers(), json=ping)
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == (
            f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'
        )
        assert missing.json()["error"]["message"] == "a bearer token or an API key is required"
        for credential in (OPS_KEY, token("alice")):
            async with client(credential) as holder:
                assert await initialize(holder, gateway.url)
        # A bearer value that is no key must be a valid token.
        wrong = await http.post(
            gateway.url, headers=mcp_headers(authorization="Bearer sk-wrong"), json=ping
        )
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"].endswith(', error="invalid_token"')
        assert "the token is malformed" in wrong.json()["error"]["message"]


async def test_a_rotated_secret_is_followed_on_reload(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky = await mcp_servers(weather())
    gateway = await start_mcp(KEYS + targets(weather=sky.url), SECRETS)

    async def status(key: str) -> int:
        async with client(key) as http:
            return (
                await http.post(gateway.url, headers=mcp_headers(), json=INITIALIZE)
            ).status_code

    assert (await status(OPS_KEY), await status(ROTATED_KEY)) == (200, 401)
    await gateway.reload(secret("ops-key", OPS_KEY), secret("ops-key", ROTATED_KEY))
    assert (await status(OPS_KEY), await status(ROTATED_KEY)) == (401, 200)


@pytest.mark.parametrize(
    ("authentication", "named"),
    [
        ({}, "at least one of jwt and apiKeys is required"),
        (
            {
                "apiKeys": [
                    {"secretRef": {"name": "keys", "key": "a"}},
                    {"secretRef": {"name": "keys", "key": "b"}},
                ]
            },
            "apiKeys[1].name: 'keys' is used twice",
        ),
    ],
)
def test_authentication_without_a_way_in_or_with_two_keys_of_one_name_is_refused(
    authentication: dict[str, object], named: str
) -> None:
    with pytest.raises(ValidationError) as raised:
        MCPBackend.model_validate(
            {
                "metadata": {"name": "tools"},
                "spec": {
                    "targets": [{"name": "a", "streamableHTTP": {"url": "http://127.0.0.1:1/"}}],
                    "authentication": authentication,
                },
            }
        )
    assert named in str(raised.value)


async def test_a_key_whose_secret_is_missing_fails_the_backend_naming_it(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky = await mcp_servers(weather())
    gateway = await start_mcp(KEYS + targets(weather=sky.url), secret("research-key", "x"))
    async with httpx.AsyncClient(timeout=10) as http:
        refused = await http.post(
            gateway.url, headers=mcp_headers(), json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
        )
    assert refused.status_code == 500, refused.text
    assert "authentication.apiKeys[1]: Secret default/ops-key not found" in gateway.log_text()
