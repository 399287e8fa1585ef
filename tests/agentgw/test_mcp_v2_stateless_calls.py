"""Calls of ``mcp`` 2.x clients (:mod:`tests.fixtures.mcp2_env`) that overlap, are abandoned or
opt in to logs: stateless clients share the gateway's upstream session (so its log level is not
theirs), and number their requests alike."""

from __future__ import annotations

import asyncio

import pytest

from tests.fixtures.mcp2_env import Spawn
from tests.fixtures.mcp_gateway import McpGateway, StartMcp, targets
from tests.fixtures.mcp_servers import ServeMcp, Signals, files, weather

V = "2026-07-28"


async def start(start_mcp: StartMcp, mcp_servers: ServeMcp, signals: Signals) -> McpGateway:
    sky, disk = await mcp_servers(weather(signals=signals)), await mcp_servers(files())
    return await start_mcp(targets(weather=sky.url, files=disk.url))


async def test_stateless_clients_using_the_same_id_at_once_each_get_their_own_answer(
    start_mcp: StartMcp, mcp_servers: ServeMcp, spawn_mcp2: Spawn
) -> None:
    signals = Signals()
    gateway = await start(start_mcp, mcp_servers, signals)
    # Each client's call is its first request, so both carry the same JSON-RPC id.
    held = await spawn_mcp2("client_call.py", gateway.url, V, "weather_halfway", "{}")
    assert await held.line() == {"progress": 1.0}  # its call is under way upstream
    quick = await spawn_mcp2("client_call.py", gateway.url, V, "weather_forecast", '{"city": "Oi"}')
    assert await quick.line() == {"text": "sunny in Oi"}
    signals.release.set()
    assert await held.line() == {"progress": 2.0}
    assert await held.line() == {"text": "both halves"}


@pytest.mark.parametrize("mode", ["legacy", V])
async def test_a_client_that_abandons_a_call_cancels_it_upstream(
    start_mcp: StartMcp, mcp_servers: ServeMcp, spawn_mcp2: Spawn, mode: str
) -> None:
    """A session client sends notifications/cancelled; a stateless one closes the call's
    stream, which the gateway turns into notifications/cancelled for the session-era upstream."""
    signals = Signals()
    gateway = await start(start_mcp, mcp_servers, signals)
    caller = await spawn_mcp2(
        "client_call.py", gateway.url, mode, "weather_halfway", "{}", "cancel"
    )
    assert await caller.line() == {"progress": 1.0}
    assert await caller.line() == {"cancelled": True}
    await asyncio.wait_for(signals.cancelled.wait(), 10)


async def test_a_stateless_client_gets_the_log_messages_it_opted_in_to_and_no_others(
    start_mcp: StartMcp, mcp_servers: ServeMcp, spawn_mcp2: Spawn
) -> None:
    gateway = await start(start_mcp, mcp_servers, Signals())
    slow = (gateway.url, V, "weather_slow", '{"steps": 1}')  # logs "step 1" at info
    opted = {(): [], ("log=warning",): [], ("log=info",): [{"log": "step 1"}]}
    callers = {extra: await spawn_mcp2("client_call.py", *slow, *extra) for extra in opted}
    for extra, logs in opted.items():
        caller = callers[extra]
        assert await caller.line() == {"progress": 1.0}
        assert [await caller.line() for _ in logs] == logs
        assert await caller.line() == {"text": "1 steps done"}, extra
