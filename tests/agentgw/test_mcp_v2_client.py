"""The ``mcp`` 2.x ``Client`` (its own environment, :mod:`tests.fixtures.mcp2_env`) against two
federated FastMCP upstreams, in each of its modes: ``legacy`` (the initialize handshake and a
session), pinned to 2026-07-28 (stateless, MRTR) and ``auto`` (``server/discover`` first).
``tests/mcp2/client_federation.py`` runs the same steps in each and reports what it saw."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mcp.server.lowlevel import NotificationOptions

from tests.fixtures.cut_relay import CutRelay
from tests.fixtures.mcp2_env import Spawn, run_script
from tests.fixtures.mcp_gateway import StartMcp, targets
from tests.fixtures.mcp_servers import ServeMcp, Signals, files, weather

TOOLS = [
    "files_echo",
    "files_file0",
    "files_file1",  # files lists one tool a page: every page was followed
    "weather_ask",
    "weather_echo",
    "weather_forecast",
    "weather_grow",
    "weather_halfway",
    "weather_plan",
    "weather_slow",
    "weather_wait",
]
UNKNOWN = {"error": {"code": -32602, "message": "Unknown tool: nowhere_tool"}}


async def federate(
    start_mcp: StartMcp, mcp_servers: ServeMcp, mcp2: Path, mode: str
) -> dict[str, Any]:
    """What the v2 client in ``mode`` saw of a gateway over ``weather`` and ``files``."""
    sky, disk = await mcp_servers(weather()), await mcp_servers(files())
    gateway = await start_mcp(targets(weather=sky.url, files=disk.url))
    return await run_script(mcp2, "client_federation.py", gateway.url, mode)


def assert_served(seen: dict[str, Any]) -> None:
    """What every mode sees alike: both targets' tools, calls, progress, logs, the upstream's
    questions answered by the client's callbacks, resources, prompts, a grown list."""
    assert seen["tools"] == TOOLS
    assert seen["forecast"] == {"text": "sunny in Oi", "isError": False}  # an SSE answer
    assert seen["echo"] == {"text": "files: hi", "isError": False}  # a JSON answer
    assert seen["slow"]["text"] == "2 steps done"
    assert seen["slow"]["progress"] == [[1.0, 2.0], [2.0, 2.0]]
    assert seen["logs"] == ["step 1", "step 2"]
    assert seen["plan"] == {"text": "ran steps for plan: tea", "isError": False}
    assert [kind for kind, _ in seen["asked"]] == ["sampling", "elicitation"]
    assert all(key.startswith("weather/n/") for _, key in seen["asked"])
    assert seen["unknown"] == UNKNOWN
    assert seen["resource"] == {"uris": ["files+file:///readme", "weather+weather://today"]} | {
        "text": "rain"
    }
    assert seen["prompt"] == "Hello Ada"
    assert seen["grow"] is True


async def test_legacy_mode_handshakes_and_is_served_in_a_session(
    start_mcp: StartMcp, mcp_servers: ServeMcp, mcp2: Path
) -> None:
    seen = await federate(start_mcp, mcp_servers, mcp2, "legacy")
    assert seen["protocolVersion"] == "2025-11-25"
    assert seen["serverInfo"] == "default/tools"
    assert seen["discovered"] is None
    assert_served(seen)
    http = seen["http"]
    assert http[0] == ["POST", None, None, 200]  # initialize, then initialized (202)
    assert ["POST", None, None, 202] in http
    assert ["GET", None, None, 200] in http  # the session's stream
    assert http[-1] == ["DELETE", None, None, 200]  # the session ends with the client
    # A session client's failures are JSON-RPC errors in 200s (the unknown tool too).
    assert {status for _, _, _, status in http} == {200, 202}


async def test_pinned_to_2026_07_28_it_is_served_statelessly_with_input_required_rounds(
    start_mcp: StartMcp, mcp_servers: ServeMcp, mcp2: Path
) -> None:
    seen = await federate(start_mcp, mcp_servers, mcp2, "2026-07-28")
    assert seen["protocolVersion"] == "2026-07-28"
    assert seen["discovered"] == ["2026-07-28"]  # pinned: no round trip
    assert_served(seen)
    http = seen["http"]
    assert {method for method, _, _, _ in http} == {"POST"}  # no session, no GET, no DELETE
    assert http[0] == ["POST", "tools/list", None, 200]
    # The call that asks twice took three rounds: input_required, input_required, complete.
    assert http.count(["POST", "tools/call", "weather_plan", 200]) == 3
    assert ["POST", "tools/call", "nowhere_tool", 400] in http  # an unknown name is a 400
    assert ["POST", "resources/read", "weather+weather://today", 200] in http


async def test_auto_mode_discovers_the_stateless_era(
    start_mcp: StartMcp, mcp_servers: ServeMcp, mcp2: Path
) -> None:
    seen = await federate(start_mcp, mcp_servers, mcp2, "auto")
    assert seen["http"][0] == ["POST", "server/discover", None, 200]
    assert seen["protocolVersion"] == "2026-07-28"
    assert seen["serverInfo"] == "default/tools"  # the discover result's _meta stamp
    assert seen["discovered"][0] == "2026-07-28"
    assert "2025-11-25" in seen["discovered"]
    assert_served(seen)
    assert {method for method, _, _, _ in seen["http"]} == {"POST"}


async def test_stateless_clients_are_not_promised_change_notifications_the_gateway_cannot_send(
    start_mcp: StartMcp, mcp_servers: ServeMcp, mcp2: Path
) -> None:
    """A target that announces list changes: session clients get them on the GET stream; in
    2026-07-28 they come only on subscriptions/listen, which the gateway does not serve."""
    sky = weather()
    lowlevel = sky._mcp_server
    options = lowlevel.create_initialization_options
    announcing = NotificationOptions(
        prompts_changed=True, resources_changed=True, tools_changed=True
    )
    lowlevel.create_initialization_options = lambda *_: options(announcing)  # type: ignore[method-assign]
    served = await mcp_servers(sky)
    gateway = await start_mcp(targets(weather=served.url))
    seen = await run_script(mcp2, "client_capabilities.py", gateway.url)
    legacy, stateless = seen["legacy"], seen["auto"]
    assert legacy["tools"] == legacy["prompts"] == {"listChanged": True}
    assert legacy["resources"]["listChanged"] is True
    assert stateless["tools"] == stateless["prompts"] == {"listChanged": False}
    assert stateless["resources"] == {"listChanged": False, "subscribe": False}


async def test_legacy_mode_resumes_a_dropped_call_stream_and_gets_the_rest_once(
    start_mcp: StartMcp, mcp_servers: ServeMcp, spawn_mcp2: Spawn
) -> None:
    signals = Signals()
    sky = await mcp_servers(weather(signals=signals))
    gateway = await start_mcp(targets(weather=sky.url))
    cutter = await CutRelay(gateway.port).start()
    try:
        url = f"http://127.0.0.1:{cutter.port}/mcp"
        caller = await spawn_mcp2("client_call.py", url, "legacy", "halfway", "{}")  # one target
        assert await caller.line() == {"progress": 1.0}
        await cutter.cut()  # the call's stream (and the GET stream) drop after progress 1 of 2
        signals.release.set()  # the rest comes while the client is away
        assert await caller.line() == {"progress": 2.0}  # nothing lost, nothing twice
        assert await caller.line() == {"text": "both halves"}
        # It came back with GET and the Last-Event-ID of the call's stream (p.…).
        assert any(b"\r\nlast-event-id: p." in sent.lower() for sent in cutter.sent())
    finally:
        await cutter.close()
