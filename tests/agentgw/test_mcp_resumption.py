"""Session clients' streams resume with ``GET`` + ``Last-Event-ID``: the SDK client whose call's
stream or GET stream dropped gets what it missed, once, then the live stream; an id the gateway
does not hold any more is answered as the module :mod:`agentgw.mcp.streams` says."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client

from agentgw.mcp.streams import SESSION_EVENTS
from tests.fixtures.cut_relay import CutRelay
from tests.fixtures.mcp_gateway import StartMcp, initialize, mcp_headers, targets
from tests.fixtures.mcp_servers import ServeMcp, Signals, files, weather

_GET_HEAD = re.compile(rb"GET [^\r]*\r\n(?:[^\r]+\r\n)*")


@pytest.fixture
async def relay() -> AsyncIterator[list[CutRelay]]:
    relays: list[CutRelay] = []
    yield relays
    for started in relays:
        await started.close()


def resumed(relay: CutRelay, kind: bytes) -> list[bytes]:
    """The request heads of GETs that carried a Last-Event-ID of a stream of ``kind`` (p: a
    request's answer, g: a GET stream)."""
    heads = [head for sent in relay.sent() for head in re.findall(_GET_HEAD, sent)]
    return [head for head in heads if b"\r\nlast-event-id: " + kind + b"." in head.lower()]


def events(text: str) -> list[tuple[str, dict[str, Any] | None]]:
    """An SSE body's events with data: (id, message or None for a priming event)."""
    found = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "id" in fields:
            data = fields.get("data", "")
            found.append((fields["id"], orjson.loads(data) if data else None))
    return found


def data(text: str) -> list[dict[str, Any]]:
    """An SSE body's messages."""
    return [orjson.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]


async def test_the_sdk_client_resumes_a_dropped_call_stream_and_gets_the_rest_once(
    start_mcp: StartMcp, mcp_servers: ServeMcp, relay: list[CutRelay]
) -> None:
    signals = Signals()
    sky, disk = await mcp_servers(weather(signals=signals)), await mcp_servers(files())
    gateway = await start_mcp(targets(weather=sky.url, files=disk.url))
    cutter = await CutRelay(gateway.port).start()
    relay.append(cutter)
    progress: list[tuple[float, float | None]] = []
    halfway = asyncio.Event()

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total))
        halfway.set()

    async with (
        streamable_http_client(f"http://127.0.0.1:{cutter.port}/mcp") as (read, write, _),
        ClientSession(read, write) as session,
    ):
        await session.initialize()
        call = asyncio.create_task(
            session.call_tool("weather_halfway", {}, progress_callback=on_progress)
        )
        await asyncio.wait_for(halfway.wait(), 10)
        await cutter.cut()  # the call's stream drops after progress 1 of 2
        signals.release.set()  # the rest comes while the client is away
        result = await asyncio.wait_for(call, 10)
    assert [c.text for c in result.content if isinstance(c, types.TextContent)] == ["both halves"]
    assert progress == [(1, 2), (2, 2)]  # nothing lost, nothing twice
    (head,) = resumed(cutter, b"p")  # its GET stream, cut too, resumed as well
    # The client resumed from the id of the progress event it had: the call's stream (p.),
    # tagged with the call's request id.
    last = next(line for line in head.split(b"\r\n") if line.lower().startswith(b"last-event-id"))
    kind, _, _, seq, request = last.split(b": ", 1)[1].decode().split(".")
    assert (kind, seq) == ("p", "1")  # event 0 primed the stream, event 1 was progress 1
    assert orjson.loads(base64.urlsafe_b64decode(request + "=" * (-len(request) % 4))) == 1


async def test_the_sdk_client_resumes_its_get_stream_and_gets_what_was_said_meanwhile(
    start_mcp: StartMcp, mcp_servers: ServeMcp, relay: list[CutRelay]
) -> None:
    sky = await mcp_servers(weather())
    gateway = await start_mcp(targets(weather=sky.url))
    cutter = await CutRelay(gateway.port).start()
    relay.append(cutter)
    changed: list[Any] = []
    arrived = asyncio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, types.ServerNotification) and isinstance(
            message.root, types.ToolListChangedNotification
        ):
            changed.append(message)
            arrived.set()

    async with (
        streamable_http_client(f"http://127.0.0.1:{cutter.port}/mcp") as (read, write, _),
        ClientSession(read, write, message_handler=on_message) as session,
    ):
        await session.initialize()
        # The GET stream's priming event (2025-11-25) reached the client: it has an id.
        await asyncio.wait_for(cutter.returned(b"id: g."), 10)
        await cutter.cut()
        await session.call_tool("grow", {})  # list_changed, said on the GET stream
        await asyncio.wait_for(arrived.wait(), 10)
        assert len(changed) == 1
    assert len(resumed(cutter, b"g")) == 1


async def test_replay_is_bounded_and_an_id_the_gateway_no_longer_holds_gets_an_answer(
    start_mcp: StartMcp, mcp_servers: ServeMcp
) -> None:
    sky = await mcp_servers(weather())
    gateway = await start_mcp(targets(weather=sky.url))
    steps = SESSION_EVENTS  # a progress event and a log event each: twice what is kept
    call = {
        "jsonrpc": "2.0",
        "id": "long-one",
        "method": "tools/call",
        "params": {"name": "slow", "arguments": {"steps": steps}, "_meta": {"progressToken": 7}},
    }
    async with httpx.AsyncClient(timeout=10) as http:
        session = await initialize(http, gateway.url)  # 2025-06-18: no priming event
        answered = await http.post(gateway.url, headers=mcp_headers(session), json=call)
        sent = events(answered.text)
        assert answered.text.startswith("retry: 500\n\n")
        assert len(sent) == 2 * steps + 1
        final = sent[-1][1]
        assert final is not None and final["id"] == "long-one" and "result" in final
        ids = [id for id, _ in sent]
        assert len(set(ids)) == len(ids)

        def get(last: str) -> Any:
            headers = {"accept": "text/event-stream", "mcp-session-id": session}
            return http.get(gateway.url, headers=headers | {"last-event-id": last})

        # The last events are kept: resuming after the third-last replays the last two.
        again = await get(ids[-3])
        assert again.status_code == 200
        assert events(again.text) == sent[-2:]
        # The first events aged out: the call's answer is lost, and the client is told so.
        lost = await get(ids[0])
        assert lost.status_code == 200
        (message,) = data(lost.text)
        assert message["id"] == "long-one"
        assert message["error"]["code"] == -32603
        assert "the answer to request 'long-one' is lost" in message["error"]["message"]
        assert "aged out of its replay buffer" in message["error"]["message"]
        # Another process's stream (a restarted gateway's, another replica's): the same.
        elsewhere = ids[-1].split(".")
        elsewhere[1] = "0ther"
        other = await get(".".join(elsewhere))
        (message,) = data(other.text)
        assert message["id"] == "long-one"
        # A GET stream's id this process does not hold: a new GET stream.
        async with http.stream(
            "GET",
            gateway.url,
            headers={
                "accept": "text/event-stream",
                "mcp-session-id": session,
                "last-event-id": "g.0ther.3.5",
            },
        ) as fresh:
            assert fresh.status_code == 200
            assert fresh.headers["content-type"] == "text/event-stream"
        # Not an id of this gateway at all: 400, naming it.
        bad = await get("42")
        assert bad.status_code == 400
        assert bad.json()["error"]["message"] == (
            "Last-Event-ID: '42' is not an event id of this gateway"
        )
