"""The asyncio side of an HBONE connection: a protocol and flow-controlled tunnel streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from mesh.errors import HboneError, Http2Error, StreamClosedError
from mesh.errors import TunnelRefused as TunnelRefusedError
from mesh.hbone import protocol as p
from mesh.hbone.protocol import ErrorCode

log = logging.getLogger(__name__)

ACK_BATCH = 64 * 1024
RequestHandler = Callable[["TunnelStream", p.TunnelRequest], Awaitable[None]]


class TunnelSink(Protocol):
    """Takes a tunnel's events as they arrive instead of queueing them for ``read()``."""

    def tunnel_data(self, data: bytes, length: int) -> None:
        """Payload; ``length`` is its flow-controlled size, to pass to ``consumed``."""

    def tunnel_eof(self) -> None:
        """The peer ended its direction (END_STREAM)."""

    def tunnel_reset(self, code: int) -> None:
        """The stream was reset or its connection closed."""

    def tunnel_writable(self) -> None:
        """Send window opened or the connection's write buffer drained."""


class TunnelStream:
    """One HBONE tunnel: read/write/end like a socket, with HTTP/2 flow control underneath.

    Either a task uses ``read``/``write``, or a ``TunnelSink`` is attached and gets the events
    as they are parsed (the protocol-level splice).
    """

    __slots__ = (
        "_chunks",
        "_read_waiter",
        "_response",
        "_write_waiter",
        "closed_locally",
        "eof",
        "peer_ended",
        "reset_code",
        "sink",
        "stream_id",
        "transport",
        "unacked",
    )

    def __init__(self, transport: H2Transport, stream_id: int) -> None:
        self.transport = transport
        self.stream_id = stream_id
        self.sink: TunnelSink | None = None
        # A list, not a deque: an empty deque allocates a 64-slot block (~600 bytes) per stream,
        # and the queue is rarely more than a few chunks long.
        self._chunks: list[tuple[bytes, int]] = []
        # Plain futures rather than asyncio.Event: a connection holds thousands of streams and
        # each Event carries its own deque.
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self.eof = False
        self.peer_ended = False
        self.unacked = 0
        self.reset_code: int | None = None
        # Created on first use: only client streams wait for a response.
        self._response: asyncio.Future[p.TunnelEstablished] | None = None
        self.closed_locally = False

    @property
    def response(self) -> asyncio.Future[p.TunnelEstablished]:
        """Client: resolves with the CONNECT's 200, or fails with the refusal or reset."""
        if self._response is None:
            self._response = asyncio.get_running_loop().create_future()
        return self._response

    def attach(self, sink: TunnelSink) -> None:
        """Hand events to ``sink`` from now on, starting with anything already queued."""
        self.sink = sink
        chunks, self._chunks = self._chunks, []
        for data, length in chunks:
            sink.tunnel_data(data, length)
        if self.reset_code is not None:
            sink.tunnel_reset(self.reset_code)
        elif self.peer_ended:
            sink.tunnel_eof()

    def _feed(self, data: bytes, length: int) -> None:
        if self.sink is not None:
            self.sink.tunnel_data(data, length)
            return
        self._chunks.append((data, length))
        self._wake_reader()

    def _feed_eof(self) -> None:
        self.eof = True
        self.peer_ended = True
        if self.sink is not None:
            self.sink.tunnel_eof()
        self._wake_reader()

    def _on_reset(self, code: int) -> None:
        self.reset_code = code
        self.eof = True
        self._wake_reader()
        self._wake_writer()
        if self._response is not None and not self._response.done():
            self._response.set_exception(HboneError(f"stream reset with code {code}"))
            if not self.transport.conn.client_side:
                self._response.exception()  # servers never await a response: mark it retrieved
        if self.sink is not None:
            self.sink.tunnel_reset(code)

    def _wake_reader(self) -> None:
        waiter, self._read_waiter = self._read_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _wake_writer(self) -> None:
        if self.sink is not None:
            self.sink.tunnel_writable()
            return
        waiter, self._write_waiter = self._write_waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def read(self) -> bytes:
        """Next chunk of payload; ``b""`` at EOF. Consumed bytes reopen the peer's window."""
        while not self._chunks:
            if self.eof:
                if not self.peer_ended and self.reset_code not in (
                    None,
                    0,
                    ErrorCode.CANCEL,
                ):
                    raise HboneError(f"tunnel reset by peer (code {self.reset_code})")
                return b""
            self._read_waiter = asyncio.get_running_loop().create_future()
            await self._read_waiter
        data, length = self._chunks.pop(0)
        self.consumed(length)
        return data

    def consumed(self, length: int, flush: bool = True) -> None:
        """``length`` bytes were passed on; with ``flush`` return the credit owed (batched).

        Window credit goes back in batches: one WINDOW_UPDATE pair per ACK_BATCH bytes instead
        of one per chunk, the rest on release. A consumer that cannot keep up holds credit back
        (``flush=False``), so the peer stops sending once the stream window is used up.
        """
        self.unacked += length
        if flush and self.unacked >= ACK_BATCH:
            self.transport.conn.ack(self.stream_id, self.unacked)
            self.unacked = 0
            self.transport.flush()

    def return_credit(self) -> None:
        """Give back any window credit not yet returned (on release)."""
        if self.unacked:
            self.transport.conn.ack(self.stream_id, self.unacked)
            self.unacked = 0
            self.transport.flush()

    async def write(self, data: bytes) -> None:
        """Send payload, waiting for window as needed; returns when handed to the socket."""
        view = memoryview(data)
        while view:
            if self.reset_code is not None or self.transport.closed:
                raise HboneError("tunnel closed while writing")
            room = self.transport.conn.max_send_chunk(self.stream_id)
            if room <= 0:
                self._write_waiter = asyncio.get_running_loop().create_future()
                await self._write_waiter
                continue
            # Whole payloads that fit the window go out without a copy.
            chunk = data if len(view) == len(data) <= room else bytes(view[:room])
            view = view[len(chunk) :]
            try:
                self.transport.conn.send(self.stream_id, chunk)
            except StreamClosedError as exc:
                raise HboneError("tunnel closed while writing") from exc
            self.transport.flush()
            await self.transport.drain()

    def end(self) -> None:
        """Half-close: the peer sees END_STREAM (and shuts down its upstream's write side)."""
        if not self.closed_locally:
            self.closed_locally = True
            self.transport.conn.end(self.stream_id)
            self.transport.flush()

    def abort(self) -> None:
        """Reset the stream (CANCEL)."""
        if self.reset_code is None:
            self.transport.conn.reset(self.stream_id)
            self.transport.flush()
            self._on_reset(ErrorCode.CANCEL)


class H2Transport(asyncio.Protocol):
    """An asyncio protocol on the TLS transport: HTTP/2 events are handled as bytes arrive."""

    def __init__(
        self,
        client_side: bool,
        on_request: RequestHandler | None = None,
        ping_interval: float = 10.0,
        ping_timeout: float = 20.0,
    ) -> None:
        self.transport: asyncio.Transport | None = None
        self.conn = p.HboneConnection(client_side)
        self.on_request = on_request
        self.streams: dict[int, TunnelStream] = {}
        self.closed = False
        self.goaway_received = False
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.last_activity = time.monotonic()
        self.idle_since = time.monotonic()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ping_sent: float | None = None
        self.pings_acked = 0
        self._closed_event = asyncio.Event()
        self._write_paused = False
        self._drain_waiters: list[asyncio.Future[None]] = []
        self._blocked: set[TunnelStream] = set()
        self.on_close: Callable[[H2Transport], None] | None = None
        self._unhandled: list[tuple[TunnelStream, p.TunnelRequest]] = []

    def set_handler(self, handler: RequestHandler) -> None:
        """Serve CONNECTs with ``handler``, including any that arrived before it was set."""
        self.on_request = handler
        pending, self._unhandled = self._unhandled, []
        for stream, request in pending:
            self._spawn(self._handle(stream, request))

    # asyncio.Protocol: reading happens in the transport's callback, with no task hop.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.conn.initiate()
        self.flush()

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        try:
            events = self.conn.receive(data)
        except Http2Error as exc:
            log.warning("HTTP/2 protocol error from peer: %s", exc)
            self.flush()
            self.close()
            return
        for ev in events:
            self._dispatch(ev)
        self.flush()

    def eof_received(self) -> bool:
        return False  # TLS has no half-close: EOF closes the connection

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("HBONE connection lost: %s", exc)
        self.close()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake_drainers(None)
        blocked, self._blocked = self._blocked, set()
        for stream in blocked:
            stream._wake_writer()

    @property
    def write_paused(self) -> bool:
        """Whether the TLS write buffer is above its high-water mark."""
        return self._write_paused

    def wait_writable(self, stream: TunnelStream) -> None:
        """Call the stream's sink back (``tunnel_writable``) when the write buffer drains."""
        self._blocked.add(stream)

    def _wake_drainers(self, exc: Exception | None) -> None:
        waiters, self._drain_waiters = self._drain_waiters, []
        for waiter in waiters:
            if not waiter.done():
                if exc is None:
                    waiter.set_result(None)
                else:
                    waiter.set_exception(exc)

    def get_extra_info(self, name: str) -> object:
        """Transport details such as ``ssl_object`` and ``peername``."""
        return self.transport.get_extra_info(name) if self.transport else None

    async def start(self) -> None:
        """Start keep-alive pinging (the preface went out in ``connection_made``)."""
        if self.ping_interval > 0:
            self._spawn(self._ping_loop())

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def flush(self) -> None:
        """Write whatever the engine queued."""
        data = self.conn.data_to_send()
        if data and not self.closed and self.transport and not self.transport.is_closing():
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the socket's write buffer is above its high-water mark."""
        if self.closed:
            raise HboneError("connection closed")
        if self._write_paused:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._drain_waiters.append(waiter)
            await waiter

    @property
    def active_streams(self) -> int:
        """Tunnels currently open on this connection."""
        return len(self.streams)

    def usable(self, limit: int) -> bool:
        """Whether a new tunnel may be opened here now."""
        return (
            not self.closed
            and not self.goaway_received
            and not self.conn.exhausted
            and self.active_streams < min(limit, self.conn.peer_max_streams)
        )

    async def open_tunnel(
        self, authority: str, headers: p.ConnectHeaders, timeout: float = 10.0
    ) -> TunnelStream:
        """Client: CONNECT and wait for 200; non-200 raises TunnelRefused."""
        if self.closed or self.goaway_received:
            raise HboneError("connection is closing")
        stream_id = self.conn.open_tunnel(authority, headers)
        stream = TunnelStream(self, stream_id)
        self.streams[stream_id] = stream
        self.flush()
        try:
            await asyncio.wait_for(asyncio.shield(stream.response), timeout)
        except BaseException:
            self._forget(stream_id)
            if not stream.response.done():
                stream.abort()
            raise
        return stream

    def _forget(self, stream_id: int) -> None:
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            self._blocked.discard(stream)
            if not self.closed:
                stream.return_credit()
        if not self.streams:
            self.idle_since = time.monotonic()
            if self.goaway_received:
                self.close()

    def release(self, stream: TunnelStream) -> None:
        """A tunnel is finished by its owner (both directions done or aborted)."""
        self._forget(stream.stream_id)

    def _dispatch(self, ev: p.Event) -> None:
        if isinstance(ev, p.Data):
            stream = self.streams.get(ev.stream_id)
            if stream is None:
                self.conn.ack(ev.stream_id, ev.flow_controlled_length)
            else:
                stream._feed(ev.data, ev.flow_controlled_length)
        elif isinstance(ev, p.EndOfStream):
            if s := self.streams.get(ev.stream_id):
                s._feed_eof()
        elif isinstance(ev, p.StreamReset):
            if s := self.streams.get(ev.stream_id):
                s._on_reset(ev.error_code)
        elif isinstance(ev, p.WindowOpened):
            if ev.stream_id == 0:
                for s in self.streams.values():
                    s._wake_writer()
            elif s := self.streams.get(ev.stream_id):
                s._wake_writer()
        elif isinstance(ev, p.TunnelRequest):
            stream = TunnelStream(self, ev.stream_id)
            self.streams[ev.stream_id] = stream
            if self.on_request is not None:
                self._spawn(self._handle(stream, ev))
            else:
                self._unhandled.append((stream, ev))
        elif isinstance(ev, p.TunnelEstablished):
            if (s := self.streams.get(ev.stream_id)) and not s.response.done():
                s.response.set_result(ev)
        elif isinstance(ev, p.TunnelRefused):
            if (s := self.streams.get(ev.stream_id)) and not s.response.done():
                s.response.set_exception(TunnelRefusedError(ev.status))
        elif isinstance(ev, p.Terminated):
            self.goaway_received = True
            if not self.streams:
                self.close()
        elif isinstance(ev, p.PingAcked):
            self._ping_sent = None
            self.pings_acked += 1

    async def _handle(self, stream: TunnelStream, request: p.TunnelRequest) -> None:
        assert self.on_request is not None
        try:
            await self.on_request(stream, request)
        except Exception:
            log.exception("HBONE request handler failed")
            stream.abort()
        finally:
            if stream.sink is None:  # a sink releases the stream itself when it is done
                self._forget(stream.stream_id)

    async def _ping_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.ping_interval)
            if self._ping_sent is not None:
                if time.monotonic() - self._ping_sent > self.ping_timeout:
                    log.warning("HBONE peer did not answer PING; closing")
                    self.conn.goaway()
                    self.flush()
                    self.close()
                    return
                continue
            if time.monotonic() - self.last_activity >= self.ping_interval:
                self._ping_sent = time.monotonic()
                self.conn.ping(os.urandom(8))
                self.flush()

    def goaway(self) -> None:
        """Drain gracefully: tell the peer no new streams; close once existing ones finish."""
        if self.closed:
            return
        self.conn.goaway()
        self.flush()
        self.goaway_received = True
        if not self.streams:
            self.close()

    def close(self) -> None:
        """Tear down the connection and every stream on it."""
        if self.closed:
            return
        self.closed = True
        for stream in list(self.streams.values()):
            stream._on_reset(ErrorCode.CONNECT_ERROR)
        with contextlib.suppress(Exception):
            if self.transport:
                self.transport.close()
        self._wake_drainers(HboneError("connection closed"))
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self._closed_event.set()
        if self.on_close:
            self.on_close(self)

    async def wait_closed(self) -> None:
        """Wait until the connection is closed."""
        await self._closed_event.wait()
