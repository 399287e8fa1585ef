"""MCPBackend metrics on /metrics: requests by method, target, tool and outcome, durations,
upstream errors, sessions started and ended."""

from __future__ import annotations

import httpx

from tests.fixtures.gateway_process import free_port
from tests.fixtures.mcp_gateway import StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, files, weather


def call(id: int, name: str, **arguments: object) -> dict[str, object]:
    params = {"name": name, "arguments": arguments}
    return {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}


async def test_requests_outcomes_sessions_and_upstream_errors_are_counted(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    dead = f"http://127.0.0.1:{free_port()}/mcp"
    spec = "failureMode: FailOpen\n" + targets(weather=sky.url, files=disk.url, gone=dead)
    gateway = await start_mcp(spec)
    async with httpx.AsyncClient(timeout=10) as http:
        session = await initialize(http, gateway.url)
        headers = mcp_headers(session)
        for i in range(2):
            answer = await http.post(
                gateway.url, headers=headers, json=call(i, "files_echo", text="x")
            )
            assert "result" in answer.json()
        streamed = await http.post(
            gateway.url, headers=headers, json=call(5, "weather_forecast", city="Oslo")
        )
        assert "sunny in Oslo" in streamed.text
        unknown = await http.post(gateway.url, headers=headers, json=call(6, "files_nothing"))
        assert unknown.json()["error"]["code"] == -32602
        refused = await http.post(gateway.url, headers=mcp_headers(), json=call(7, "files_echo"))
        assert refused.status_code == 400
        assert (await http.delete(gateway.url, headers=headers)).status_code == 200
    families = await gateway.metrics()
    requests = {
        tuple(s.labels[k] for k in ("method", "target", "tool", "outcome")): s.value
        for s in families["mcp_requests"].samples
        if s.name == "mcp_requests_total" and s.labels["backend"] == "default/tools"
    }
    assert requests[("tools/call", "files", "files_echo", "ok")] == 2
    assert requests[("tools/call", "weather", "weather_forecast", "ok")] == 1
    assert requests[("tools/call", "", "", "error")] == 1  # unknown: no target owns it
    assert requests[("tools/call", "", "", "refused")] == 1
    assert requests[("initialize", "", "", "ok")] == 1
    assert requests[("DELETE", "", "", "ok")] == 1
    count = [
        s.value
        for s in families["mcp_request_duration_seconds"].samples
        if s.name == "mcp_request_duration_seconds_count" and s.labels["method"] == "tools/call"
    ]
    assert count == [5]
    errors = {s.labels["target"]: s.value for s in families["mcp_upstream_errors"].samples}
    assert errors["gone"] >= 1
    started = families["mcp_sessions_started"].samples[0]
    ended = families["mcp_sessions_ended"].samples[0]
    assert started.value == ended.value == 1
