"""Clients that do not read: the gateway stops reading their upstreams instead of holding the
responses (``ambient gateway`` as a subprocess, its RSS read from /proc)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset
from h2.settings import SettingCodes

from tests.fixtures.echo_process import gateway_yaml, route_yaml, service_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port

BODY = 1024 * 1024
LARGE = 8 * BODY
STREAMS = 100
CONNECTIONS = 20
# What the gateway may grow by while 100 MiB wait for clients that do not read: its
# per-connection budget (1 MiB), what was in flight when it was spent, allocator slack.
RSS_GROWTH = 8 * 1024 * 1024


def body_of(path: bytes, size: int = BODY) -> bytes:
    """A body that differs per request, so bytes landing on the wrong stream are caught."""
    unit = path.ljust(16, b".")
    return unit * (size // len(unit))


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Every path gets 1 MiB (``/large/...``: 8 MiB), written as the connection drains."""
    try:
        while head := await reader.readuntil(b"\r\n\r\n"):
            path = head.split(b" ", 2)[1]
            body = body_of(path, LARGE if path.startswith(b"/large/") else BODY)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % len(body))
            for start in range(0, len(body), 256 * 1024):
                writer.write(body[start : start + 256 * 1024])
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[tuple[GatewayProcess, int]]:
    """A gateway subprocess in front of an upstream that answers every path with 1 MiB."""
    upstream = await asyncio.start_server(_serve, "127.0.0.1", 0)
    port = free_port()
    config = tmp_path / "routes.yaml"
    upstream_port = upstream.sockets[0].getsockname()[1]
    config.write_text(
        gateway_yaml(port) + service_yaml("big", upstream_port) + route_yaml("r", "big")
    )
    gw = GatewayProcess([config])
    try:
        await asyncio.to_thread(gw.wait_ready)
        yield gw, port
    finally:
        code = await asyncio.to_thread(gw.stop)
        upstream.close()
        assert code == 0, gw.output()


def rss(gw: GatewayProcess) -> int:
    """The gateway process's resident set, in bytes."""
    with open(f"/proc/{gw.proc.pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc status")


async def peak_rss(gw: GatewayProcess, seconds: float) -> int:
    """The highest RSS seen over ``seconds`` (a bounded poll: the growth, if any, is fast)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    peak = rss(gw)
    while loop.time() < deadline:
        await asyncio.sleep(0.05)
        peak = max(peak, rss(gw))
    return peak


class H2Client:
    """A raw HTTP/2 client (the h2 library) that controls its windows."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = H2Connection(H2Configuration(client_side=True, header_encoding=None))
        self.bodies: dict[int, bytearray] = {}
        self.status: dict[int, bytes] = {}
        self.ended: set[int] = set()
        self.reset: set[int] = set()
        self.acknowledge = False  # re-open the windows as data is read

    @classmethod
    async def open(cls, port: int, window: int) -> H2Client:
        client = cls(*await asyncio.open_connection("127.0.0.1", port))
        client.conn.initiate_connection()
        client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: window})
        await client.flush()
        return client

    async def flush(self) -> None:
        self.writer.write(self.conn.data_to_send())
        await self.writer.drain()

    async def read_until(self, done, timeout: float) -> None:  # type: ignore[no-untyped-def]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not done():
            data = await asyncio.wait_for(self.reader.read(1 << 20), deadline - loop.time())
            if not data:
                raise ConnectionError("the gateway closed the connection")
            for event in self.conn.receive_data(data):
                if isinstance(event, ResponseReceived):
                    self.status[event.stream_id] = dict(event.headers)[b":status"]
                elif isinstance(event, DataReceived):
                    self.bodies.setdefault(event.stream_id, bytearray()).extend(event.data)
                    if self.acknowledge and event.flow_controlled_length:
                        self.conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                elif isinstance(event, StreamEnded):
                    self.ended.add(event.stream_id)
                elif isinstance(event, StreamReset):
                    self.reset.add(event.stream_id)
            await self.flush()


async def test_an_http2_client_with_no_window_pins_no_upstream_responses(
    gateway: tuple[GatewayProcess, int],
) -> None:
    """100 streams of 1 MiB with SETTINGS_INITIAL_WINDOW_SIZE=0: the gateway stops reading the
    upstreams once its connection budget is spent, so its RSS stays within a few MiB; when the
    client opens its windows every stream completes with its own, whole body."""
    gw, port = gateway
    warm = await H2Client.open(port, window=2 * BODY)  # load the code paths before measuring
    warm.acknowledge = True
    warm.conn.increment_flow_control_window(4 * BODY)
    sid = warm.conn.get_next_available_stream_id()
    warm.conn.send_headers(
        sid,
        [(":method", "GET"), (":scheme", "http"), (":authority", "h"), (":path", "/warm")],
        end_stream=True,
    )
    await warm.flush()
    await warm.read_until(lambda: sid in warm.ended, 20)
    warm.writer.close()
    baseline = rss(gw)

    client = await H2Client.open(port, window=0)
    sids = []
    for i in range(STREAMS):
        sid = client.conn.get_next_available_stream_id()
        path = f"/s{i}"
        client.conn.send_headers(
            sid,
            [(":method", "GET"), (":scheme", "http"), (":authority", "h"), (":path", path)],
            end_stream=True,
        )
        sids.append((sid, path.encode()))
    await client.flush()
    peak = await peak_rss(gw, 3.0)
    growth = peak - baseline
    print(f"RSS baseline {baseline >> 10} KiB, peak {peak >> 10} KiB, growth {growth >> 10} KiB")
    assert growth < RSS_GROWTH, f"the gateway grew by {growth >> 20} MiB holding responses"

    client.acknowledge = True
    client.conn.increment_flow_control_window(STREAMS * BODY)
    for sid, _ in sids:
        client.conn.increment_flow_control_window(BODY, stream_id=sid)
    await client.flush()
    await client.read_until(lambda: len(client.ended | client.reset) == STREAMS, 60)
    assert not client.reset
    for sid, path in sids:
        assert client.status[sid] == b"200"
        assert client.bodies[sid] == body_of(path), f"stream {sid} ({path!r}): wrong body"
    client.writer.close()


async def test_http11_clients_that_stop_reading_pin_no_upstream_responses(
    gateway: tuple[GatewayProcess, int],
) -> None:
    """The same for HTTP/1.1: 20 clients that ask for 8 MiB each and do not read. A full client
    socket pauses the upstream read, so what waits stays in the kernel's socket buffers, not in
    the gateway; once the clients read, each gets its whole body."""
    gw, port = gateway
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /warm HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), 20)).endswith(body_of(b"/warm"))
    writer.close()
    baseline = rss(gw)

    clients = []
    for i in range(CONNECTIONS):
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=LARGE * 2)
        writer.transport.pause_reading()  # the client stops reading: its socket fills up
        writer.write(f"GET /large/{i} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        clients.append((reader, writer, f"/large/{i}".encode()))
    peak = await peak_rss(gw, 3.0)
    growth = peak - baseline
    print(f"RSS baseline {baseline >> 10} KiB, peak {peak >> 10} KiB, growth {growth >> 10} KiB")
    assert growth < RSS_GROWTH, f"the gateway grew by {growth >> 20} MiB holding responses"

    for _, writer, _ in clients:
        writer.transport.resume_reading()
    for reader, writer, path in clients:
        data = await asyncio.wait_for(reader.read(), 60)
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        assert body == body_of(path, LARGE), f"{path!r}: wrong body ({len(body)} bytes)"
        writer.close()
