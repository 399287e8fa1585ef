"""Listener management: binding follows the snapshot, ports are shared, close drains."""

from __future__ import annotations

import asyncio
import shutil
import subprocess

import httpx
import pytest

from gateway.demo.echo import EchoServer
from gateway.observability.propagation import NoopTelemetry
from gateway.proxy.listeners import LISTEN_BACKLOG, ListenerManager
from gateway.snapshot import ListenerInfo, Snapshot, SnapshotHolder
from tests.fixtures.gateway_process import free_port as another_port
from tests.fixtures.proxy import (
    PrefixRouter,
    StaticBackend,
    choice,
    holder,
    rule,
    snapshot,
    wait_for,
)

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)


async def test_sync_binds_new_ports_and_closes_removed(echo: EchoServer, free_port: int) -> None:
    the_rule = rule(choice(StaticBackend("echo", [echo.port])))
    h = holder(free_port, {"/": the_rule})
    manager = ListenerManager(h, NoopTelemetry(), bind_address="127.0.0.1")
    await manager.sync()
    second = another_port()
    listeners = (
        ListenerInfo("default", "gw", "a", free_port, "HTTP", None),
        ListenerInfo("default", "gw", "b", second, "HTTP", None),
        ListenerInfo("default", "gw", "tls", another_port(), "HTTPS", None),
    )
    routers = {p: PrefixRouter({"/": the_rule}) for p in (free_port, second)}
    h.current = Snapshot(2, listeners, routers)
    await manager.sync()
    assert manager.ports == sorted([free_port, second])  # HTTPS waits for TLS support
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"http://127.0.0.1:{second}/x")).status_code == 200
        h.current = snapshot(second, {"/": the_rule}, 3)
        await manager.sync()
        assert manager.ports == [second]
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{free_port}/x", headers={"connection": "close"})
    await manager.close(grace=1)


async def test_two_managers_share_a_port(echo: EchoServer, free_port: int) -> None:
    h = holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    first = ListenerManager(h, NoopTelemetry(), bind_address="127.0.0.1")
    second = ListenerManager(h, NoopTelemetry(), bind_address="127.0.0.1")
    await first.sync()
    await second.sync()  # SO_REUSEPORT: how worker processes share listeners
    async with httpx.AsyncClient(timeout=5) as client:
        assert (await client.get(f"http://127.0.0.1:{free_port}/")).status_code == 200
    await first.close(grace=1)
    await second.close(grace=1)


async def test_close_lets_in_flight_requests_finish(echo: EchoServer, free_port: int) -> None:
    h: SnapshotHolder = holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    manager = ListenerManager(h, NoopTelemetry(), bind_address="127.0.0.1")
    await manager.sync()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as client:
        slow = asyncio.create_task(client.get("/slow?delay_ms=300"))
        await asyncio.sleep(0.1)
        closing = asyncio.create_task(manager.close(grace=2))
        response = await slow
        assert response.status_code == 200 and response.headers["connection"] == "close"
        await asyncio.wait_for(closing, 3)
    assert not manager.connections


async def test_close_cuts_endless_streams_after_grace(echo: EchoServer, free_port: int) -> None:
    h = holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    manager = ListenerManager(h, NoopTelemetry(), bind_address="127.0.0.1")
    await manager.sync()
    reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
    writer.write(b"GET /sse?events=0&interval_ms=20 HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(reader.readuntil(b"data: "), 5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await manager.close(grace=0.3)
    assert loop.time() - started < 1.5
    while await asyncio.wait_for(reader.read(65536), 5):
        pass  # the stream ends
    writer.close()
    await wait_for(lambda: echo.stats.sse_open == 0)


async def test_listen_backlog_is_the_one_asked_for(echo: EchoServer, free_port: int) -> None:
    """create_server listens again on the socket it is given: its default backlog (100) must
    not replace ours. ``ss`` shows a listening socket's backlog in its Send-Q column."""
    ss = shutil.which("ss")
    if ss is None:
        pytest.skip("ss (iproute2) is not installed: the listen backlog cannot be read")
    with open("/proc/sys/net/core/somaxconn") as f:
        expected = min(LISTEN_BACKLOG, int(f.read()))  # the kernel caps what listen() asks
    manager = ListenerManager(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))}),
        NoopTelemetry(),
        bind_address="127.0.0.1",
    )
    await manager.sync()
    try:
        out = subprocess.run(
            [ss, "-ltnH", f"sport = :{free_port}"], capture_output=True, text=True, check=True
        ).stdout
    finally:
        await manager.close(grace=0.1)
    rows = [line.split() for line in out.splitlines() if line.strip()]
    assert rows, f"ss shows no listener on port {free_port}"
    # State, Recv-Q, Send-Q (the backlog), Local, Peer
    assert {int(row[2]) for row in rows} == {expected}, f"listen backlog per ss: {out!r}"
