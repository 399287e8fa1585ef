"""The HTTP/2 server engine (``h2_server``) on loopback sockets: httpx for normal use, a raw h2
client for abuse."""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import h2.connection
import h2.events
import httpx
import pytest
import uvloop
from h2.config import H2Configuration
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
)

from gateway.proxy.buffer_budget import BufferBudget
from gateway.proxy.h2_common import PREFACE, H2Limits, is_h2_preface
from gateway.proxy.h2_server import H2ServerConnection, ServerStream

Headers = list[tuple[bytes, bytes]]
TIMEOUT = 10.0

# -- synchronisation -------------------------------------------------------------------------


class Watch:
    """Everything observable bumps it; tests await a predicate on the new state."""

    def __init__(self) -> None:
        self._changed = asyncio.Event()

    def bump(self) -> None:
        self._changed.set()

    async def until(self, predicate: Callable[[], object], timeout: float = TIMEOUT) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


# -- server side -----------------------------------------------------------------------------


class Handler:
    """A test handler: records the engine's calls; answers on end() unless told to hold."""

    def __init__(
        self, server: Server, stream: ServerStream, headers: Headers, *, hold: bool, consume: bool
    ) -> None:
        self.server = server
        self.stream = stream
        self.headers = headers
        self.hold = hold
        self.consume = consume
        self.body = bytearray()
        self.ended = False
        self.trailer_fields: Headers | None = None
        self.reset_code: int | None = None
        self.paused: list[bool] = []

    @property
    def path(self) -> bytes:
        return dict(self.headers)[b":path"]

    def data(self, data: bytes) -> None:
        self.body += data
        if self.consume:
            self.stream.consumed(len(data))
        self.server.watch.bump()

    def end(self) -> None:
        self.ended = True
        if not self.hold:
            self.respond()
        self.server.watch.bump()

    def trailers(self, headers: Headers) -> None:
        self.trailer_fields = headers
        self.server.watch.bump()

    def reset(self, error_code: int) -> None:
        self.reset_code = error_code
        self.server.watch.bump()

    def write_paused(self, paused: bool) -> None:
        self.paused.append(paused)
        self.server.watch.bump()

    def respond(self, status: int = 200, body: bytes | None = None) -> None:
        if body is None:
            body = b"ok " + self.path + b" " + bytes(self.body)
        self.stream.send_headers(status, [(b"Content-Type", b"text/plain")])
        self.stream.send_data(body)
        self.stream.end()


class Server:
    """An H2ServerConnection listener on 127.0.0.1 and what its connections did."""

    def __init__(self, watch: Watch, limits: H2Limits | None) -> None:
        self.watch = watch
        self.limits = limits
        self.hold = False
        self.consume = True
        self.handlers: list[Handler] = []
        self.connections: list[H2ServerConnection] = []
        self.closed: list[H2ServerConnection] = []
        self.server: asyncio.Server | None = None
        self.port = 0
        self.budget: BufferBudget | None = None  # the process's, shared by the connections

    def factory(self, stream: ServerStream, headers: Headers) -> Handler:
        handler = Handler(self, stream, headers, hold=self.hold, consume=self.consume)
        self.handlers.append(handler)
        self.watch.bump()
        return handler

    def protocol(self) -> H2ServerConnection:
        conn = H2ServerConnection(
            self.factory, self.limits, on_close=self._closed, budget=self.budget
        )
        self.connections.append(conn)
        self.watch.bump()
        return conn

    def _closed(self, conn: H2ServerConnection) -> None:
        self.closed.append(conn)
        self.watch.bump()

    def handler(self, path: bytes) -> Handler:
        return next(h for h in self.handlers if h.path == path)

    async def start(self, protocol: Callable[[], asyncio.Protocol] | None = None) -> Server:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(protocol or self.protocol, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in self.connections:
            conn.abort()
        if self.server is not None:
            await self.server.wait_closed()


StartServer = Callable[..., Awaitable[Server]]


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture
async def start_server(watch: Watch) -> AsyncIterator[StartServer]:
    servers: list[Server] = []

    async def start(limits: H2Limits | None = None, **attrs: Any) -> Server:
        server = Server(watch, limits)
        for name, value in attrs.items():
            setattr(server, name, value)
        servers.append(server)
        return await server.start()

    yield start
    for server in servers:
        await server.close()


# -- raw client ------------------------------------------------------------------------------


class _ClientH2(h2.connection.H2Connection):
    """h2 client that keeps receiving after a GOAWAY (h2 itself closes its state machine), so
    a graceful GOAWAY followed by the rest of a response can be observed."""

    def _receive_goaway_frame(self, frame: GoAwayFrame) -> tuple[list[Frame], list[Any]]:
        event = h2.events.ConnectionTerminated()
        event.error_code = frame.error_code
        event.last_stream_id = frame.last_stream_id
        return [], [event]


REQUEST: Headers = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"localhost"),
    (b":path", b"/"),
]


def request_headers(path: bytes = b"/", method: bytes = b"GET") -> Headers:
    return [(b":method", method), (b":scheme", b"http"), (b":authority", b"t"), (b":path", path)]


class RawClient:
    """An h2 client over asyncio streams without outbound validation; records every event."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: Any, watch: Watch
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.conn: h2.connection.H2Connection = conn
        self.watch = watch
        self.events: list[Any] = []
        self.eof = False
        self.hold: set[int] = set()  # streams whose DATA is not acknowledged (window stays shut)
        self.unacked: dict[int, int] = {}
        self._task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(
        cls, port: int, watch: Watch, *, connection_window: int = 0, stream_window: int = 0
    ) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        conn = _ClientH2(
            H2Configuration(
                client_side=True,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                validate_inbound_headers=False,
            )
        )
        conn.initiate_connection()
        if connection_window:
            conn.increment_flow_control_window(connection_window)
        if stream_window:
            conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: stream_window})
        client = cls(reader, writer, conn, watch)
        client.flush()
        return client

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                events = self.conn.receive_data(data)
                for event in events:
                    if isinstance(event, h2.events.DataReceived):
                        size = event.flow_controlled_length
                        if event.stream_id in self.hold:
                            self.unacked[event.stream_id] = (
                                self.unacked.get(event.stream_id, 0) + size
                            )
                            if size:
                                self.conn.increment_flow_control_window(size)
                        elif size:
                            self.conn.acknowledge_received_data(size, event.stream_id)
                self.events.extend(events)
                self.flush()
                self.watch.bump()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            self.eof = True
            self.watch.bump()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def write_raw(self, data: bytes) -> None:
        self.flush()
        self.writer.write(data)

    def request(
        self,
        path: bytes = b"/",
        *,
        headers: Headers | None = None,
        body: bytes | None = None,
        end: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        block = headers if headers is not None else request_headers(path)
        self.conn.send_headers(sid, block, end_stream=end and body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        self.flush()
        return sid

    def release(self, sid: int) -> None:
        """Open the held stream's window again."""
        self.hold.discard(sid)
        size = self.unacked.pop(sid, 0)
        if size:
            self.conn.increment_flow_control_window(size, stream_id=sid)
            self.flush()

    def of(self, kind: type, sid: int | None = None) -> list[Any]:
        return [
            e
            for e in self.events
            if isinstance(e, kind) and (sid is None or getattr(e, "stream_id", None) == sid)
        ]

    def status(self, sid: int) -> bytes | None:
        for event in self.of(h2.events.ResponseReceived, sid):
            return dict(event.headers)[b":status"]
        return None

    def body(self, sid: int) -> bytes:
        return b"".join(e.data for e in self.of(h2.events.DataReceived, sid))

    def complete(self, sid: int) -> bool:
        return bool(self.of(h2.events.StreamEnded, sid))

    def reset_code(self, sid: int) -> int | None:
        resets = self.of(h2.events.StreamReset, sid)
        return int(resets[0].error_code) if resets else None

    def goaway(self) -> Any:
        terminated = self.of(h2.events.ConnectionTerminated)
        return terminated[0] if terminated else None

    async def upload(self, sid: int, data: bytes) -> None:
        """Send ``data`` on ``sid`` as the flow-control windows allow, then END_STREAM."""
        view = memoryview(data)
        while view:
            window = self.conn.local_flow_control_window(sid)
            size = min(window, self.conn.max_outbound_frame_size, len(view))
            if size <= 0:
                await self.watch.until(
                    lambda: self.eof or self.conn.local_flow_control_window(sid) > 0
                )
                if self.eof:
                    return
                continue
            self.conn.send_data(sid, bytes(view[:size]))
            view = view[size:]
            self.flush()
        self.conn.end_stream(sid)
        self.flush()

    async def close(self) -> None:
        self._task.cancel()
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except (ConnectionError, OSError):
            pass


@pytest.fixture
async def clients(watch: Watch) -> AsyncIterator[Callable[..., Awaitable[RawClient]]]:
    opened: list[RawClient] = []

    async def open_client(port: int, **kwargs: Any) -> RawClient:
        client = await RawClient.open(port, watch, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


async def served_ok(server: Server, open_client: Callable[..., Awaitable[RawClient]]) -> bool:
    """A fresh connection to ``server`` gets a normal answer."""
    client = await open_client(server.port)
    sid = client.request(b"/probe")
    await server.watch.until(lambda: client.complete(sid) or client.eof)
    return client.status(sid) == b"200" and client.body(sid) == b"ok /probe "


# -- normal use ------------------------------------------------------------------------------


def test_is_h2_preface_accepts_the_preface_and_its_prefixes_only() -> None:
    assert is_h2_preface(PREFACE)
    assert is_h2_preface(PREFACE + b"\x00\x00\x00\x04")
    assert is_h2_preface(b"PRI * HT")
    assert is_h2_preface(b"P")
    assert not is_h2_preface(b"")
    assert not is_h2_preface(b"GET / HTTP/1.1\r\n")
    assert not is_h2_preface(b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n")


async def test_httpx_multiplexes_concurrent_requests_with_bodies_on_one_connection(
    start_server: StartServer,
) -> None:
    server = await start_server(hold=True)
    count = 40
    ended: list[Handler] = []

    def factory(stream: ServerStream, headers: Headers) -> Handler:
        handler = Server.factory(server, stream, headers)
        original_end = handler.end

        def end() -> None:
            original_end()
            ended.append(handler)
            if len(ended) == count:  # every request is open at once: answer them all now
                for each in ended:
                    each.respond(body=bytes(each.body) * 2)

        handler.end = end  # type: ignore[method-assign]
        return handler

    server.factory = factory  # type: ignore[method-assign]
    async with httpx.AsyncClient(
        http1=False, http2=True, base_url=f"http://127.0.0.1:{server.port}", timeout=TIMEOUT
    ) as client:
        bodies = [bytes([65 + i % 26]) * (1000 * (i + 1)) for i in range(count)]
        responses = await asyncio.gather(
            *(client.post(f"/item/{i}", content=body) for i, body in enumerate(bodies))
        )
    for i, response in enumerate(responses):
        assert response.http_version == "HTTP/2"
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/plain"
        assert response.content == bodies[i] * 2
    assert len(server.connections) == 1
    assert len(ended) == count  # all 40 streams were open together on the one connection


async def test_finished_streams_are_forgotten(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    limits = H2Limits(max_concurrent_streams=16)
    server = await start_server(limits)
    client = await clients(server.port)
    for _ in range(10):
        sids = [client.request(f"/r{i}".encode()) for i in range(16)]
        await server.watch.until(lambda sids=sids: all(client.complete(s) for s in sids))
    conn = server.connections[0]
    assert conn.active_streams == 0
    assert conn.streams_refused == 0
    assert not conn._streams and not conn._ignored


async def test_unread_stream_pauses_its_handler_while_another_stream_keeps_flowing(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(H2Limits(write_high_water=32 * 1024), hold=True)
    client = await clients(server.port, connection_window=1 << 24)
    slow = client.request(b"/slow")
    fast = client.request(b"/fast")
    client.hold.add(slow)
    await server.watch.until(lambda: len(server.handlers) == 2)
    big = b"s" * (512 * 1024)
    for path in (b"/slow", b"/fast"):
        handler = server.handler(path)
        handler.stream.send_headers(200, [])
        handler.stream.send_data(big, end_stream=True)
    slow_handler, fast_handler = server.handler(b"/slow"), server.handler(b"/fast")

    await server.watch.until(lambda: client.complete(fast))
    assert client.body(fast) == big
    assert fast_handler.paused == [True, False]
    # The unread stream stopped at the client's window (65535) and its handler is paused.
    assert len(client.body(slow)) == 65535
    assert slow_handler.paused == [True]
    assert not client.complete(slow)

    client.release(slow)
    await server.watch.until(lambda: client.complete(slow))
    assert client.body(slow) == big
    assert slow_handler.paused == [True, False]


async def zero_window_client(
    clients: Callable[..., Awaitable[RawClient]], port: int, paths: list[bytes]
) -> tuple[RawClient, list[int]]:
    """A client whose streams start with no window (SETTINGS_INITIAL_WINDOW_SIZE=0)."""
    client = await clients(port)
    client.conn.update_settings({SettingCodes.INITIAL_WINDOW_SIZE: 0})
    client.flush()
    return client, [client.request(path) for path in paths]


def open_windows(client: RawClient, sids: list[int], size: int) -> None:
    client.conn.increment_flow_control_window(size * len(sids))
    for sid in sids:
        client.conn.increment_flow_control_window(size, stream_id=sid)
    client.flush()


async def test_a_spent_connection_budget_pauses_every_stream_with_no_window(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    """Past the connection's buffer budget, streams with no window pause before their upstream
    sends anything (the attack: many streams, no window); all resume when the client reads."""
    limits = H2Limits(connection_buffer=64 * 1024, write_high_water=1 << 20)
    server = await start_server(limits, hold=True)
    client, sids = await zero_window_client(clients, server.port, [b"/a", b"/b", b"/c"])
    await server.watch.until(lambda: len(server.handlers) == 3 and server.handlers[2].ended)
    first, *others = server.handlers
    body = b"x" * (100 * 1024)
    first.stream.send_headers(200, [])
    first.stream.send_data(body, end_stream=True)  # held: the client's window is 0
    assert first.paused == [True]
    assert [h.paused for h in others] == [[True], [True]]  # nothing of theirs was buffered
    open_windows(client, sids, len(body))
    await server.watch.until(lambda: client.complete(sids[0]))
    assert client.body(sids[0]) == body
    await server.watch.until(lambda: all(h.paused == [True, False] for h in others))
    for handler in others:
        handler.respond()
    await server.watch.until(lambda: all(client.complete(sid) for sid in sids))
    assert server.connections[0]._buffered == 0


async def test_the_process_budget_pauses_other_connections_and_wakes_them(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    """One budget over all connections: when one connection spends it, a new stream with no
    window on another connection pauses at once, and resumes when the bytes are sent."""
    server = await start_server(H2Limits(connection_buffer=1 << 20), hold=True)
    server.budget = BufferBudget(64 * 1024)
    hog, hog_sids = await zero_window_client(clients, server.port, [b"/hog"])
    await server.watch.until(lambda: server.handlers and server.handlers[0].ended)
    body = b"h" * (100 * 1024)
    server.handlers[0].stream.send_headers(200, [])
    server.handlers[0].stream.send_data(body, end_stream=True)
    assert server.budget.used == len(body)
    other, _ = await zero_window_client(clients, server.port, [b"/other"])
    await server.watch.until(lambda: len(server.handlers) == 2)
    victim = server.handler(b"/other")
    assert victim.paused == [True]
    open_windows(hog, hog_sids, len(body))
    await server.watch.until(lambda: victim.paused == [True, False])
    await server.watch.until(lambda: hog.complete(hog_sids[0]))
    assert hog.body(hog_sids[0]) == body
    assert server.budget.used == 0
    assert not other.eof


async def test_a_body_the_windows_allow_goes_out_at_once_in_frames_with_end_stream(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    client = await clients(server.port, connection_window=1 << 20, stream_window=1 << 20)
    sid = client.request(b"/large")
    await server.watch.until(lambda: server.handlers)
    handler = server.handlers[0]
    body = bytes(range(256)) * 400  # 100 KiB: seven frames of at most 16 KiB
    handler.stream.send_headers(200, [])
    handler.stream.send_data(body, end_stream=True)
    assert handler.stream.closed
    await server.watch.until(lambda: client.complete(sid))
    assert client.body(sid) == body
    assert len(client.of(h2.events.DataReceived, sid)) == 7
    assert handler.paused == []
    assert server.connections[0].active_streams == 0


async def test_handler_that_does_not_consume_stalls_only_its_own_stream(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    window = 100_000
    server = await start_server(H2Limits(initial_window_size=window), hold=True)
    client = await clients(server.port)
    await server.watch.until(lambda: client.of(h2.events.RemoteSettingsChanged))
    stuck = client.request(b"/stuck", end=False)
    flowing = client.request(b"/flowing", end=False)
    await server.watch.until(lambda: len(server.handlers) == 2)
    stuck_handler = server.handler(b"/stuck")
    stuck_handler.consume = False
    payload = bytes(range(256)) * 1024  # 256 KiB each, more than the window
    stuck_upload = asyncio.ensure_future(client.upload(stuck, payload))
    await client.upload(flowing, payload)

    flowing_handler = server.handler(b"/flowing")
    await server.watch.until(lambda: flowing_handler.ended)
    assert bytes(flowing_handler.body) == payload
    await server.watch.until(lambda: len(stuck_handler.body) == window)
    assert not stuck_upload.done()
    assert client.conn.local_flow_control_window(stuck) == 0
    assert not stuck_handler.ended

    stuck_handler.stream.consumed(len(stuck_handler.body))
    stuck_handler.consume = True
    await asyncio.wait_for(stuck_upload, TIMEOUT)
    await server.watch.until(lambda: stuck_handler.ended)
    assert bytes(stuck_handler.body) == payload


async def test_client_reset_cancels_the_handler_and_frees_the_stream(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    client = await clients(server.port)
    sid = client.request(b"/long", end=False)
    await server.watch.until(lambda: server.handlers)
    conn = server.connections[0]
    assert conn.active_streams == 1
    client.conn.reset_stream(sid, ErrorCodes.CANCEL)
    client.flush()
    handler = server.handlers[0]
    await server.watch.until(lambda: handler.reset_code is not None)
    assert handler.reset_code == ErrorCodes.CANCEL
    assert conn.active_streams == 0
    assert handler.stream.closed
    handler.stream.send_headers(200, [])  # too late: ignored, no error
    assert conn.flood_goaways == 0


async def test_connection_loss_resets_every_open_handler(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    client = await clients(server.port)
    client.request(b"/a", end=False)
    client.request(b"/b")
    await server.watch.until(lambda: len(server.handlers) == 2)
    await client.close()
    await server.watch.until(lambda: server.closed)
    assert [h.reset_code for h in server.handlers] == [ErrorCodes.CANCEL, ErrorCodes.CANCEL]


async def test_request_and_response_trailers_pass_through(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    client = await clients(server.port)
    sid = client.request(b"/grpc", body=b"\x00\x00\x00\x00\x01x", end=False)
    client.conn.send_headers(sid, [(b"x-checksum", b"42")], end_stream=True)
    client.flush()
    await server.watch.until(lambda: server.handlers and server.handlers[0].ended)
    handler = server.handlers[0]
    assert handler.trailer_fields == [(b"x-checksum", b"42")]
    handler.stream.send_headers(200, [(b"content-type", b"application/grpc")])
    handler.stream.send_data(b"\x00\x00\x00\x00\x00")
    handler.stream.send_trailers([(b"grpc-status", b"0")])
    await server.watch.until(lambda: client.complete(sid))
    trailers = client.of(h2.events.TrailersReceived, sid)
    assert dict(trailers[0].headers) == {b"grpc-status": b"0"}
    assert server.connections[0].active_streams == 0


async def test_a_response_finished_before_the_request_body_stops_the_upload_without_error(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    client = await clients(server.port)
    sid = client.request(b"/early", body=b"partial", end=False)
    await server.watch.until(lambda: server.handlers and server.handlers[0].body)
    server.handlers[0].respond(status=413, body=b"too much")
    await server.watch.until(lambda: client.reset_code(sid) is not None)
    assert client.status(sid) == b"413"
    assert client.complete(sid)
    assert client.reset_code(sid) == ErrorCodes.NO_ERROR
    assert server.handlers[0].reset_code is None
    assert server.connections[0].active_streams == 0


async def test_a_failing_handler_resets_only_its_stream(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server()
    original = server.factory

    def factory(stream: ServerStream, headers: Headers) -> Handler:
        if dict(headers)[b":path"] == b"/boom":
            raise RuntimeError("handler bug")
        return original(stream, headers)

    server.factory = factory  # type: ignore[method-assign]
    client = await clients(server.port)
    boom = client.request(b"/boom")
    fine = client.request(b"/fine")
    await server.watch.until(lambda: client.complete(fine) and client.reset_code(boom))
    assert client.reset_code(boom) == ErrorCodes.INTERNAL_ERROR
    assert client.body(fine) == b"ok /fine "
    assert client.goaway() is None


async def test_client_goaway_closes_the_connection_and_resets_handlers(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    client = await clients(server.port)
    client.request(b"/pending")
    await server.watch.until(lambda: server.handlers)
    client.conn.close_connection()
    client.flush()
    await server.watch.until(lambda: client.eof and server.closed)
    assert server.handlers[0].reset_code == ErrorCodes.CANCEL


async def test_transport_pause_pauses_every_handler(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    client = await clients(server.port)
    client.request(b"/a")
    client.request(b"/b")
    await server.watch.until(lambda: len(server.handlers) == 2)
    conn = server.connections[0]
    conn.pause_writing()
    conn.resume_writing()
    assert [h.paused for h in server.handlers] == [[True, False], [True, False]]


# -- refusals and floods ---------------------------------------------------------------------


async def test_too_many_streams_refuses_the_extra_stream_and_serves_the_others(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(H2Limits(max_concurrent_streams=4), hold=True)
    client = await clients(server.port)
    # Sent before the server's SETTINGS arrive, so the client does not hold itself back.
    sids = [client.request(f"/s{i}".encode()) for i in range(5)]
    await server.watch.until(lambda: client.reset_code(sids[4]) is not None)
    assert client.reset_code(sids[4]) == ErrorCodes.REFUSED_STREAM
    assert len(server.handlers) == 4
    for handler in server.handlers:
        handler.respond()
    await server.watch.until(lambda: all(client.complete(s) for s in sids[:4]))
    assert [client.status(s) for s in sids[:4]] == [b"200"] * 4
    again = client.request(b"/again")
    server.hold = False
    await server.watch.until(lambda: client.complete(again))
    assert client.status(again) == b"200"
    conn = server.connections[0]
    assert conn.streams_refused == 1
    assert conn.protocol_errors == 0


class _GreedyClientH2(_ClientH2):
    """Opens streams past the server's SETTINGS_MAX_CONCURRENT_STREAMS."""

    @property
    def open_outbound_streams(self) -> int:
        _ClientH2.open_outbound_streams.fget(self)  # type: ignore[attr-defined]  # purges closed streams
        return 0


async def test_refusals_have_their_own_budget_apart_from_the_client_resets(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    """Refusing is the server's act: refusals over the reset budget are no flood; over their
    own budget they are."""
    limits = H2Limits(max_concurrent_streams=1, reset_flood=2, refused_flood=6)
    server = await start_server(limits, hold=True)
    client = await clients(server.port)
    sids = [client.request(f"/s{i}".encode()) for i in range(6)]  # before our SETTINGS arrive
    await server.watch.until(lambda: all(client.reset_code(s) is not None for s in sids[1:]))
    assert {client.reset_code(s) for s in sids[1:]} == {ErrorCodes.REFUSED_STREAM}
    assert client.goaway() is None
    client.conn.__class__ = _GreedyClientH2  # past the limit it now knows
    more = [client.request(b"/more") for _ in range(2)]
    await server.watch.until(lambda: client.goaway() is not None)
    assert client.goaway().error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert client.goaway().last_stream_id == sids[0] < more[0]
    server.handler(b"/s0").respond()  # the accepted stream still finishes
    await server.watch.until(lambda: client.complete(sids[0]))
    assert client.status(sids[0]) == b"200"


async def test_rapid_reset_flood_gets_goaway_enhance_your_calm_other_connections_unaffected(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    bystander = await clients(server.port)
    calm_sid = bystander.request(b"/bystander")
    attacker = await clients(server.port)
    accepted = attacker.request(b"/accepted")
    await server.watch.until(lambda: len(server.handlers) == 2)

    for _ in range(300):  # CVE-2023-44487: open and cancel at once, over and over
        sid = attacker.conn.get_next_available_stream_id()
        attacker.conn.send_headers(sid, request_headers(b"/flood"), end_stream=True)
        attacker.conn.reset_stream(sid, ErrorCodes.CANCEL)
    attacker.flush()
    await server.watch.until(lambda: attacker.goaway() is not None)
    goaway = attacker.goaway()
    assert goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert accepted <= goaway.last_stream_id < sid  # the flood's streams are not "accepted"
    attacked = server.connections[1]
    assert attacked.flood_goaways == 1
    assert sum(h.path == b"/flood" for h in server.handlers) < 300

    # The stream accepted before the flood may still finish; then the connection closes.
    server.handler(b"/accepted").respond()
    await server.watch.until(lambda: attacker.eof)
    assert attacker.complete(accepted)
    assert attacker.status(accepted) == b"200"

    server.handler(b"/bystander").respond()
    await server.watch.until(lambda: bystander.complete(calm_sid))
    assert bystander.status(calm_sid) == b"200"
    assert server.connections[0].flood_goaways == 0
    server.hold = False
    assert await served_ok(server, clients)


@pytest.mark.parametrize("kind", ["settings", "ping"])
async def test_settings_and_ping_floods_get_goaway_enhance_your_calm(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]], kind: str
) -> None:
    server = await start_server()
    client = await clients(server.port)
    if kind == "settings":
        frame = SettingsFrame(0, settings={SettingCodes.ENABLE_PUSH: 0}).serialize()
    else:
        frame = PingFrame(0, opaque_data=b"12345678").serialize()
    client.write_raw(frame * 150)
    await server.watch.until(lambda: client.eof)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert server.connections[0].flood_goaways == 1
    assert await served_ok(server, clients)


async def test_control_frames_under_the_budget_are_answered(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server()
    client = await clients(server.port)
    client.write_raw(PingFrame(0, opaque_data=b"12345678").serialize() * 50)
    await server.watch.until(lambda: len(client.of(h2.events.PingAckReceived)) == 50)
    sid = client.request(b"/after")
    await server.watch.until(lambda: client.complete(sid))
    assert client.goaway() is None


MALFORMED: dict[str, Headers] = {
    "missing :path": [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"t")],
    "missing :method": [(b":scheme", b"http"), (b":authority", b"t"), (b":path", b"/")],
    "missing :scheme": [(b":method", b"GET"), (b":authority", b"t"), (b":path", b"/")],
    "empty :path": [*request_headers()[:3], (b":path", b"")],
    "relative :path": [*request_headers()[:3], (b":path", b"x")],
    "unknown pseudo-header": [*request_headers(), (b":foo", b"bar")],
    "duplicate :path": [*request_headers(), (b":path", b"/again")],
    "pseudo-header after a field": [*request_headers()[:3], (b"a", b"b"), (b":path", b"/")],
    "upper-case name": [*request_headers(), (b"X-Upper", b"1")],
    "space in name": [*request_headers(), (b"x y", b"1")],
    "connection-specific field": [*request_headers(), (b"connection", b"keep-alive")],
    "transfer-encoding": [*request_headers(), (b"transfer-encoding", b"chunked")],
    "te other than trailers": [*request_headers(), (b"te", b"gzip")],
    "CR LF in a value": [*request_headers(), (b"x-a", b"1\r\nx-b: 2")],
    "whitespace around a value": [*request_headers(), (b"x-a", b" 1")],
    "no authority and no host": [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/")],
    "bad content-length": [*request_headers(), (b"content-length", b"ten")],
    ":protocol without extended CONNECT": [*request_headers(), (b":protocol", b"websocket")],
    "CONNECT with :path": [(b":method", b"CONNECT"), (b":authority", b"t:1"), (b":path", b"/")],
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_request_gets_protocol_error_on_its_stream_only(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]], case: str
) -> None:
    server = await start_server()
    client = await clients(server.port)
    bad = client.request(headers=MALFORMED[case])
    good = client.request(b"/good")
    await server.watch.until(lambda: client.complete(good) and client.reset_code(bad) is not None)
    assert client.reset_code(bad) == ErrorCodes.PROTOCOL_ERROR
    assert client.status(good) == b"200"
    assert [h.path for h in server.handlers] == [b"/good"]
    conn = server.connections[0]
    assert conn.malformed_streams == 1
    assert conn.protocol_errors == 0
    assert client.goaway() is None


BAD_HOSTS = {
    "host differs from :authority": (
        [*request_headers(), (b"host", b"other")],
        b"the host header names another authority than :authority",
    ),
    "another port": (
        [*request_headers(), (b"host", b"t:8080")],
        b"the host header names another authority than :authority",
    ),
    "two host fields": (
        [*request_headers()[:2], (b":path", b"/"), (b"host", b"t"), (b"host", b"t")],
        b"more than one host header",
    ),
    "two host fields with :authority": (
        [*request_headers(), (b"host", b"t"), (b"host", b"t")],
        b"more than one host header",
    ),
}


@pytest.mark.parametrize("case", list(BAD_HOSTS))
@pytest.mark.parametrize("ended", [True, False])
async def test_host_rules_get_400_naming_the_problem_on_that_stream_only(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]], case: str, ended: bool
) -> None:
    """RFC 9113 8.3.1 (host vs :authority) and one Host only: a 400 that says why, the stream
    closes (a client still sending is told to stop), the connection carries on."""
    server = await start_server()
    client = await clients(server.port)
    headers, message = BAD_HOSTS[case]
    bad = client.request(headers=headers, end=ended)
    good = client.request(b"/good")
    await server.watch.until(lambda: client.complete(good) and client.complete(bad))
    assert client.status(bad) == b"400"
    assert client.body(bad) == message + b"\n"
    if not ended:
        assert client.reset_code(bad) == ErrorCodes.NO_ERROR
    assert client.status(good) == b"200"
    assert [h.path for h in server.handlers] == [b"/good"]
    assert server.connections[0].malformed_streams == 1
    assert client.goaway() is None
    later = client.request(b"/later")
    await server.watch.until(lambda: client.complete(later))
    assert client.status(later) == b"200"


@pytest.mark.parametrize(
    ("authority", "host"),
    [(b"t", b"T"), (b"t", b"t:80"), (b"T:80", b"t"), (b"t:", b"t"), (b"[::1]", b"[::1]:80")],
)
async def test_host_equal_to_authority_after_normalization_is_accepted(
    start_server: StartServer,
    clients: Callable[..., Awaitable[RawClient]],
    authority: bytes,
    host: bytes,
) -> None:
    """RFC 9113 8.3.1: the two are compared after scheme-based normalization (case, default
    port), not byte for byte."""
    server = await start_server()
    client = await clients(server.port)
    sid = client.request(
        headers=[
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", authority),
            (b":path", b"/n"),
            (b"host", host),
        ]
    )
    await server.watch.until(lambda: client.complete(sid) or client.reset_code(sid) is not None)
    assert client.status(sid) == b"200"


async def test_split_cookies_are_joined_for_the_handler(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server()
    client = await clients(server.port)
    sid = client.request(headers=[*request_headers(), (b"cookie", b"a=1"), (b"cookie", b"b=2")])
    await server.watch.until(lambda: client.complete(sid))
    assert (b"cookie", b"a=1; b=2") in server.handlers[0].headers


async def test_connect_is_answered_405(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server()
    client = await clients(server.port)
    sid = client.request(headers=[(b":method", b"CONNECT"), (b":authority", b"example.com:443")])
    await server.watch.until(lambda: client.complete(sid) or client.reset_code(sid) is not None)
    assert client.status(sid) == b"405"
    assert server.handlers == []


async def test_header_list_over_the_limit_is_answered_431_and_the_connection_lives(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(H2Limits(max_header_list_size=8192))
    client = await clients(server.port)
    big = client.request(headers=[*request_headers(b"/big"), (b"x-big", b"a" * 10_000)])
    after = client.request(b"/after")
    await server.watch.until(lambda: client.complete(big) and client.complete(after))
    assert client.status(big) == b"431"
    assert client.status(after) == b"200"
    assert [h.path for h in server.handlers] == [b"/after"]
    assert server.connections[0].headers_too_large == 1


async def test_header_list_beyond_what_is_decoded_gets_goaway_other_connections_unaffected(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(H2Limits(max_header_list_size=8192))
    client = await clients(server.port)
    client.request(headers=[*request_headers(), (b"x-huge", b"a" * 40_000)])
    await server.watch.until(lambda: client.eof)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert server.handlers == []
    assert await served_ok(server, clients)


async def test_continuation_flood_gets_goaway(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server()
    client = await clients(server.port)
    headers = HeadersFrame(1, data=b"\x82")  # :method GET, no END_HEADERS
    flood = b"".join(ContinuationFrame(1, data=b"\x86").serialize() for _ in range(100))
    client.write_raw(headers.serialize() + flood)
    await server.watch.until(lambda: client.eof)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.PROTOCOL_ERROR
    assert server.connections[0].protocol_errors == 1
    assert await served_ok(server, clients)


@pytest.mark.parametrize(
    ("garbage", "code"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", ErrorCodes.FRAME_SIZE_ERROR),  # as a frame header
        (b"\x00\x00\x04\x00\x00\x00\x00\x00\x00abcd", ErrorCodes.PROTOCOL_ERROR),  # DATA on 0
    ],
)
async def test_garbage_after_the_preface_gets_goaway_and_the_server_keeps_accepting(
    start_server: StartServer,
    clients: Callable[..., Awaitable[RawClient]],
    garbage: bytes,
    code: int,
) -> None:
    server = await start_server()
    client = await clients(server.port)
    client.write_raw(garbage)
    await server.watch.until(lambda: client.eof)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == code
    assert server.connections[0].protocol_errors == 1
    assert await served_ok(server, clients)


async def test_a_wrong_preface_gets_goaway_protocol_error(
    start_server: StartServer, watch: Watch
) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    received = await asyncio.wait_for(reader.read(), TIMEOUT)  # until the server closes
    writer.close()
    frames = _frames(received)
    assert isinstance(frames[-1], GoAwayFrame)
    assert frames[-1].error_code == ErrorCodes.PROTOCOL_ERROR


def _frames(data: bytes) -> list[Frame]:
    frames = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        frames.append(frame)
        data = data[9 + length :]
    return frames


# -- shutdown --------------------------------------------------------------------------------


async def test_drain_sends_goaway_no_error_finishes_the_in_flight_stream_then_closes(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    client = await clients(server.port)
    sid = client.request(b"/in-flight")
    await server.watch.until(lambda: server.handlers)
    conn = server.connections[0]
    conn.drain()
    await server.watch.until(lambda: client.goaway() is not None)
    goaway = client.goaway()
    assert goaway.error_code == ErrorCodes.NO_ERROR
    assert goaway.last_stream_id == sid
    late = client.request(b"/late")  # crossed the GOAWAY: refused, safe to retry elsewhere
    await server.watch.until(lambda: client.reset_code(late) is not None)
    assert client.reset_code(late) == ErrorCodes.REFUSED_STREAM
    assert not client.eof

    server.handlers[0].respond(body=b"done")
    await server.watch.until(lambda: client.eof)
    assert client.complete(sid)
    assert client.body(sid) == b"done"
    await server.watch.until(lambda: server.closed == [conn])
    assert len(server.handlers) == 1


async def test_drain_of_an_idle_connection_closes_it_at_once(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server()
    client = await clients(server.port)
    await server.watch.until(lambda: client.of(h2.events.RemoteSettingsChanged))
    server.connections[0].drain()
    await server.watch.until(lambda: client.eof)
    assert client.goaway().error_code == ErrorCodes.NO_ERROR


# -- switching from HTTP/1.1 -----------------------------------------------------------------


class Http1Front(asyncio.Protocol):
    """The HTTP/1.1 listener's side of a switch: prior-knowledge preface or Upgrade: h2c."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buffer += data
        if is_h2_preface(self.buffer):
            conn = self.server.protocol()
            conn.connection_made(self.transport)
            self.transport.set_protocol(conn)
            conn.data_received(self.buffer)
            return
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        lines = head.split(b"\r\n")
        method, target, _ = lines[0].split(b" ")
        fields = [tuple(part.strip() for part in line.split(b":", 1)) for line in lines[1:]]
        names = {name.lower(): value for name, value in fields}
        headers: Headers = [
            (b":method", method),
            (b":scheme", b"http"),
            (b":authority", names[b"host"]),
            (b":path", target),
        ]
        hop = {b"host", b"connection", b"upgrade", b"http2-settings"}
        headers += [(name.lower(), value) for name, value in fields if name.lower() not in hop]
        conn = self.server.protocol()
        conn.take_over(self.transport, names[b"http2-settings"], headers, rest)


async def prior_knowledge_switch(watch: Watch) -> None:
    server = Server(watch, None)
    await server.start(lambda: Http1Front(server))
    try:
        async with httpx.AsyncClient(
            http1=False, http2=True, base_url=f"http://127.0.0.1:{server.port}", timeout=TIMEOUT
        ) as http:
            responses = await asyncio.gather(*(http.get(f"/p{i}") for i in range(5)))
        assert [r.text for r in responses] == [f"ok /p{i} " for i in range(5)]
        assert len(server.connections) == 1

        # A preface split across reads: the switch happens on its first bytes.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        conn = _ClientH2(H2Configuration(client_side=True, header_encoding=None))
        conn.initiate_connection()
        conn.send_headers(1, REQUEST, end_stream=True)
        data = conn.data_to_send()
        writer.write(data[:7])
        await writer.drain()
        await watch.until(lambda: len(server.connections) == 2)
        writer.write(data[7:])
        client = RawClient(reader, writer, conn, watch)
        await watch.until(lambda: client.complete(1))
        assert client.body(1) == b"ok / "
        await client.close()
    finally:
        await server.close()


async def h2c_upgrade(watch: Watch) -> None:
    server = Server(watch, None)
    await server.start(lambda: Http1Front(server))
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        conn = _ClientH2(H2Configuration(client_side=True, header_encoding=None))
        settings = conn.initiate_upgrade_connection()
        assert settings is not None
        writer.write(
            b"GET /upgraded HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n"
            b"Upgrade: h2c\r\nHTTP2-Settings: " + settings + b"\r\nX-Extra: yes\r\n\r\n"
        )
        await writer.drain()
        status = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        assert status.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Upgrade: h2c" in status
        client = RawClient(reader, writer, conn, watch)
        client.flush()  # the client preface and SETTINGS
        await watch.until(lambda: client.complete(1))
        assert client.status(1) == b"200"
        assert client.body(1) == b"ok /upgraded "
        handler = server.handlers[0]
        assert (b"x-extra", b"yes") in handler.headers
        assert handler.ended
        more = client.request(b"/more")
        await watch.until(lambda: client.complete(more))
        assert client.body(more) == b"ok /more "
        assert len(server.connections) == 1
        await client.close()
    finally:
        await server.close()


async def test_prior_knowledge_switch_from_an_http1_listener(watch: Watch) -> None:
    await prior_knowledge_switch(watch)


async def test_h2c_upgrade_take_over_serves_the_upgraded_request_as_stream_1(watch: Watch) -> None:
    await h2c_upgrade(watch)


@pytest.mark.parametrize("scenario", [prior_knowledge_switch, h2c_upgrade])
def test_switches_work_on_uvloop(scenario: Callable[[Watch], Awaitable[None]]) -> None:
    async def run() -> None:
        await scenario(Watch())

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run())


def test_take_over_rejects_bad_http2_settings_before_writing() -> None:
    class Transport:
        written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    conn = H2ServerConnection(lambda stream, headers: None)
    with pytest.raises(ValueError, match="HTTP2-Settings"):
        conn.take_over(Transport(), base64.urlsafe_b64encode(b"\x00\x04"), REQUEST)  # type: ignore[arg-type]
    assert Transport.written == []


def test_limits_refuse_values_outside_the_protocol_ranges() -> None:
    with pytest.raises(ValueError, match="max_frame_size"):
        H2Limits(max_frame_size=1024)
    with pytest.raises(ValueError, match="initial_window_size"):
        H2Limits(initial_window_size=1000)


# -- frame-level rules (RFC 9113) ------------------------------------------------------------


def raw_frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    """A frame built by hand: 24-bit length, type, flags, stream id, payload."""
    return struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid) + payload


def raw_settings(*pairs: tuple[int, int]) -> bytes:
    return raw_frame(0x4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


async def finished_request(server: Server, client: RawClient) -> int:
    sid = client.request(b"/done")
    await server.watch.until(lambda: client.complete(sid))
    return sid


CONNECTION_ERRORS: dict[str, tuple[Callable[[int], bytes], int]] = {
    # Each builds the frames from the id of a stream the client already finished.
    "ENABLE_PUSH 2": (lambda sid: raw_settings((0x2, 2)), ErrorCodes.PROTOCOL_ERROR),
    "INITIAL_WINDOW_SIZE 2^31": (
        lambda sid: raw_settings((0x4, 2**31)),
        ErrorCodes.FLOW_CONTROL_ERROR,
    ),
    "MAX_FRAME_SIZE too small": (lambda sid: raw_settings((0x5, 1024)), ErrorCodes.PROTOCOL_ERROR),
    "MAX_FRAME_SIZE too large": (lambda sid: raw_settings((0x5, 2**24)), ErrorCodes.PROTOCOL_ERROR),
    "SETTINGS of a bad length": (
        lambda sid: raw_frame(0x4, 0, 0, b"\x00\x02\x00"),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "WINDOW_UPDATE of 0 on the connection": (
        lambda sid: raw_frame(0x8, 0, 0, struct.pack(">I", 0)),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "connection window overflow": (
        lambda sid: raw_frame(0x8, 0, 0, struct.pack(">I", 2**31 - 1)),
        ErrorCodes.FLOW_CONTROL_ERROR,
    ),
    "DATA on a closed stream": (
        lambda sid: raw_frame(0x0, 0, sid, b"late"),
        ErrorCodes.STREAM_CLOSED,
    ),
    "DATA on an idle stream": (
        lambda sid: raw_frame(0x0, 0, sid + 10, b"early"),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "HEADERS on an even stream id": (
        lambda sid: raw_frame(0x1, 0x5, sid + 1, b"\x82\x86\x84\x41\x01t"),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "PUSH_PROMISE from a client": (
        lambda sid: raw_frame(0x5, 0x4, sid, struct.pack(">I", sid + 1) + b"\x82"),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "frame over SETTINGS_MAX_FRAME_SIZE": (
        lambda sid: raw_frame(0xBB, 0, 0, b"x" * 16385),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "PING of a bad length": (
        lambda sid: raw_frame(0x6, 0, 0, b"1234"),
        ErrorCodes.FRAME_SIZE_ERROR,
    ),
    "RST_STREAM on an idle stream": (
        lambda sid: raw_frame(0x3, 0, sid + 10, struct.pack(">I", 8)),
        ErrorCodes.PROTOCOL_ERROR,
    ),
    "CONTINUATION without HEADERS": (
        lambda sid: raw_frame(0x9, 0x4, sid + 2, b"\x82"),
        ErrorCodes.PROTOCOL_ERROR,
    ),
}


@pytest.mark.parametrize("case", list(CONNECTION_ERRORS))
async def test_frame_rule_violations_are_connection_errors(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]], case: str
) -> None:
    build, code = CONNECTION_ERRORS[case]
    server = await start_server()
    client = await clients(server.port)
    sid = await finished_request(server, client)
    client.write_raw(build(sid))
    await server.watch.until(lambda: client.eof)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == code
    assert server.connections[0].protocol_errors == 1
    assert await served_ok(server, clients)


async def test_data_beyond_the_stream_window_is_a_flow_control_error(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(H2Limits(initial_window_size=65535), hold=True, consume=False)
    client = await clients(server.port)
    sid = client.request(b"/upload", end=False)
    await server.watch.until(lambda: server.handlers)
    client.write_raw(raw_frame(0x0, 0, sid, b"x" * 16384) * 5)  # 80 KiB into a 64 KiB window
    await server.watch.until(lambda: client.eof)
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.FLOW_CONTROL_ERROR
    assert server.handlers[0].reset_code == ErrorCodes.CANCEL


async def test_padding_priority_and_unknown_frames_are_handled(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server()
    client = await clients(server.port)
    block = client.conn.encoder.encode(request_headers(b"/padded"))
    # HEADERS with PADDED and PRIORITY, a PRIORITY frame, an extension frame, padded DATA.
    fields = b"\x03" + b"\x00\x00\x00\x00\x10" + block + b"pad"  # pad length, priority
    headers = raw_frame(0x1, 0x4 | 0x8 | 0x20, 1, fields)
    priority = raw_frame(0x2, 0, 3, b"\x00\x00\x00\x01\x10")
    unknown = raw_frame(0xFA, 0xFF, 0, b"whatever")
    data = raw_frame(0x0, 0x1 | 0x8, 1, b"\x02body\x00\x00")
    client.write_raw(headers + priority + unknown + data)
    await server.watch.until(lambda: server.handlers and server.handlers[0].ended)
    assert bytes(server.handlers[0].body) == b"body"
    assert server.connections[0].protocol_errors == 0
    # The raw frames bypassed the client's own state: talk to the connection again raw.
    client.write_raw(raw_frame(0x6, 0, 0, b"pingpong"))
    await server.watch.until(lambda: client.of(h2.events.PingAckReceived) or client.eof)
    assert client.goaway() is None


async def test_input_split_into_single_bytes_is_parsed(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    conn = _ClientH2(H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.send_headers(1, request_headers(b"/split"), end_stream=False)
    conn.send_data(1, b"x" * 100, end_stream=True)
    for byte in conn.data_to_send():
        writer.write(bytes((byte,)))
        await writer.drain()
    client = RawClient(reader, writer, conn, server.watch)
    try:
        await server.watch.until(lambda: client.complete(1))
        assert client.body(1) == b"ok /split " + b"x" * 100
    finally:
        await client.close()


async def test_late_frames_on_a_stream_the_server_reset_are_ignored(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server(hold=True)
    client = await clients(server.port)
    sid = client.request(b"/early", body=b"partial", end=False)
    await server.watch.until(lambda: server.handlers and server.handlers[0].body)
    server.handlers[0].respond(status=413, body=b"too much")
    await server.watch.until(lambda: client.reset_code(sid) is not None)
    # Sent as if before the client saw the RST_STREAM: more DATA, trailers, a WINDOW_UPDATE.
    trailers = client.conn.encoder.encode([(b"x-late", b"1")])
    client.write_raw(
        raw_frame(0x0, 0, sid, b"more")
        + raw_frame(0x1, 0x5, sid, trailers)
        + raw_frame(0x8, 0, sid, struct.pack(">I", 100))
    )
    server.hold = False
    after = client.request(b"/after")
    await server.watch.until(lambda: client.complete(after) or client.eof)
    assert client.status(after) == b"200"
    assert client.goaway() is None
    assert server.connections[0].protocol_errors == 0


async def test_content_length_must_match_the_body(
    start_server: StartServer, clients: Callable[..., Awaitable[RawClient]]
) -> None:
    server = await start_server()
    client = await clients(server.port)
    short = client.request(
        headers=[*request_headers(b"/short", b"POST"), (b"content-length", b"10")],
        body=b"12345",
    )
    await server.watch.until(lambda: client.eof or client.reset_code(short) is not None)
    # A stream error (RFC 9113 8.1.1): the connection lives on.
    assert client.reset_code(short) == ErrorCodes.PROTOCOL_ERROR
    assert server.connections[0].malformed_streams == 1
    assert await served_ok(server, clients)
