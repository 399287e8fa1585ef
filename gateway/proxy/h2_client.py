"""h2c upstreams on our own frame layer (RFC 9113), without ``h2``/``hyperframe``.

Why our own frame layer and stream state machine rather than the ``h2`` library: a client on
``h2`` spent ~200 us of CPU per request, this one ~20 us. The frame layer is the server engine's
(:mod:`gateway.proxy.h2_server`), and ``python -m bench.h2_core`` measures the same trade on that
side against a plain ``h2`` server.
HPACK: requests go out through the stateless encoder of :mod:`gateway.proxy.h2_common` (no
dynamic table, credentials never indexed), responses come in through the ``hpack`` decoder
behind the same decode cache the server engine uses.

An :class:`H2ClientStream` stands in for an ``Http1Connection`` towards its owner: the owner sends
one request through it and hears the response through the same callbacks, plus
``upstream_trailers``. Streams are single-use; the pool hands a fresh one out per request and the
slot frees when the response ends or the stream resets. The :class:`H2ClientConnection` underneath
multiplexes them, keeps within the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS`` and does flow control
both ways so one slow stream never stalls the others.

How frames are handled:

- the peer's first frame must be a SETTINGS frame (else: not h2c, the dial fails); frames larger
  than our SETTINGS_MAX_FRAME_SIZE (16 KiB), bad SETTINGS, a header block that fails to decode or
  is interrupted, PUSH_PROMISE (push is disabled), frames on streams we never opened, DATA beyond
  a window, a zero connection WINDOW_UPDATE: connection errors, i.e. GOAWAY, every stream lost
  with "bad-response" and the socket dropped;
- a malformed response on one stream (no or a bad ``:status``, invalid field names or values,
  connection-specific fields, DATA before the head, trailers without END_STREAM or with
  pseudo-headers, a body that does not match ``content-length``): RST_STREAM(PROTOCOL_ERROR) and
  that stream alone is lost with "bad-response";
- frames on streams that already ended here (reset, completed) are ignored, their DATA still
  re-opens the connection window;
- output is collected in one buffer and written once per read (sends outside a read are
  coalesced with one ``call_soon`` per loop iteration).
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

from gateway.proxy.h2_common import (
    CANCEL,
    COMPRESSION_ERROR,
    CONNECTION_SPECIFIC,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    MAX_WINDOW,
    NAME_BYTES,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    VALUE_CTL,
    WHITESPACE,
    CachingDecoder,
    Headers,
    StatelessEncoder,
)
from gateway.proxy.h2_server import (
    _ACK,
    _CONTINUATION,
    _DATA,
    _DEFAULT_FRAME_SIZE,
    _DEFAULT_WINDOW,
    _ENABLE_PUSH,
    _END_STREAM,
    _GOAWAY,
    _HEADERS,
    _INITIAL_WINDOW_SIZE,
    _MAX_CONCURRENT_STREAMS,
    _MAX_FRAME_SIZE,
    _MAX_HEADER_LIST_SIZE,
    _PADDED,
    _PING,
    _PRIORITY,
    _PUSH_PROMISE,
    _RST_STREAM,
    _SETTING,
    _SETTINGS,
    _U32,
    _WINDOW_UPDATE,
    HeaderBlockReader,
    _ConnectionError,
    _frame,
    _goaway_frame,
    _pack_header,
    _parse_settings,
    _rst_frame,
    _U32x2,
    _unpack_header,
    _unpad,
    _window_frame,
    header_block_frames,
)
from gateway.proxy.upstream import ACTIVE, CLOSED, CONNECTING, IDLE

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint
    from gateway.proxy.pool import H2Group, UpstreamPool

__all__ = [
    "CONNECTION_CREDIT_BATCH",
    "CONNECTION_WINDOW",
    "HIGH_WATER",
    "LOW_WATER",
    "STREAM_CAP",
    "STREAM_CREDIT_BATCH",
    "STREAM_WINDOW",
    "H2ClientConnection",
    "H2ClientStream",
    "StreamOwner",
]

STREAM_WINDOW = 1 << 20  # our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE)
CONNECTION_WINDOW = 16 << 20  # our receive window for the whole connection
STREAM_CAP = 1_000  # streams per connection even when the peer allows more (gRPC sets no limit)
HIGH_WATER = 64 * 1024  # request bytes queued on a stream before its owner is paused
LOW_WATER = 16 * 1024  # ... and resumed
# Received bytes are handed back as window in batches, not one WINDOW_UPDATE per DATA frame.
STREAM_CREDIT_BATCH = STREAM_WINDOW // 4
CONNECTION_CREDIT_BATCH = CONNECTION_WINDOW // 4
# What we accept in a response's header list (64 KiB, h2's default).
MAX_HEADER_LIST = 1 << 16
_MAX_STREAM_ID = 2**31 - 1

# Our preface: the magic, SETTINGS (no push, our stream window, our header list limit), and the
# connection window raised from the spec's 64 KiB.
_PREFACE = (
    PREFACE
    + _frame(
        _SETTINGS,
        0,
        0,
        b"".join(
            _SETTING.pack(ident, value)
            for ident, value in (
                (_ENABLE_PUSH, 0),
                (_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
                (_MAX_HEADER_LIST_SIZE, MAX_HEADER_LIST),
            )
        ),
    )
    + _window_frame(0, CONNECTION_WINDOW - _DEFAULT_WINDOW)
)
_SETTINGS_ACK = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"
_PING_ACK = b"\x00\x00\x08\x06\x01\x00\x00\x00\x00"


class _PoolHooks(Protocol):
    """The ``UpstreamPool`` calls a connection makes (typed against this module's classes, so
    this module type-checks whichever client engine ``pool.py`` imports)."""

    def forget(self, conn: H2ClientConnection) -> None: ...

    def h2_capacity(self, conn: H2ClientConnection) -> None: ...

    def h2_idle(self, conn: H2ClientConnection) -> None: ...

    def h2_draining(self, conn: H2ClientConnection) -> None: ...


class StreamOwner(Protocol):
    """What a stream reports to whoever sent its request: ``UpstreamOwner``'s events for a stream.

    Kept apart because the stream stands in for an ``Http1Connection`` by duck typing, so the
    ``conn`` it passes is typed as itself; no raw heads, upgrades or tunnels on HTTP/2.
    """

    def upstream_informational(self, status: int) -> None:
        """A 1xx arrived."""

    def upstream_head(
        self, conn: H2ClientStream, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        """The final response head arrived (pseudo-headers removed, ``reason`` is empty)."""

    def upstream_body(self, data: bytes) -> None:
        """Response body bytes."""

    def upstream_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        """The response's trailers (gRPC's status); ``upstream_complete`` follows."""

    def upstream_complete(self, conn: H2ClientStream) -> None:
        """The response ended; the stream is detached from the owner."""

    def upstream_lost(self, conn: H2ClientStream, reason: str) -> None:
        """The stream ended early: "reset", "refused" (never processed) or "bad-response"."""

    def upstream_flush(self) -> None:
        """One upstream read was handled: write out what it produced."""

    def upstream_write_paused(self, paused: bool) -> None:
        """The stream's request-body queue passed the high-water mark (True) or drained (False)."""


class H2ClientStream:
    """One request/response exchange on an h2c connection, duck-typing ``Http1Connection``.

    States: IDLE (handed out, request not sent), ACTIVE (request sent), CLOSED (response ended,
    reset or aborted). Never ACTIVE when released as reusable, so ``UpstreamPool.release`` always
    ends in :meth:`close`.
    """

    __slots__ = (
        "_end_pending",
        "_expected",
        "_head_request",
        "_headed",
        "_in_batch",
        "_local_ended",
        "_pending",
        "_pending_size",
        "_received",
        "_recv_window",
        "_unacked",
        "_window",
        "_write_paused",
        "connection",
        "endpoint",
        "keep_alive",
        "no_body",
        "owner",
        "reading_paused",
        "served",
        "state",
        "stream_id",
    )

    def __init__(self, connection: H2ClientConnection) -> None:
        self.connection = connection
        self.endpoint = connection.endpoint
        self.owner: StreamOwner | None = None
        self.state = IDLE
        self.stream_id: int | None = None
        self.served = 0
        self.no_body = False  # HEAD: h2 frames its end anyway, kept for owners that set it
        self.keep_alive = True
        self.reading_paused = False
        self._unacked = 0  # received bytes not yet given back as stream window
        self._local_ended = False
        self._end_pending = False  # END_STREAM waits behind queued body bytes
        self._pending: deque[bytes | memoryview] | None = None
        self._pending_size = 0
        self._write_paused = False
        self._in_batch = False
        self._window = 0  # request bytes the peer accepts now (set when the request goes out)
        self._recv_window = STREAM_WINDOW  # response bytes we accept now
        self._headed = False  # the final response head arrived
        self._head_request = False  # the request is a HEAD: content-length describes no body
        self._expected = -1  # the response's content-length, -1 when absent or not applicable
        self._received = 0  # response body bytes so far

    # -- used by owners ------------------------------------------------------------------------

    def send_request(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """Open the stream with a HEADERS frame (pseudo-headers first, lower-case names)."""
        if self.state is not IDLE:
            return
        conn = self.connection
        if conn.goaway or conn.state is CLOSED:
            self._refuse()
            return
        stream_id = conn._next_id
        if stream_id > _MAX_STREAM_ID:
            conn.exhausted()
            self._refuse()
            return
        if len(conn.streams) >= conn.max_streams:  # the peer lowered its limit after we took it
            self._refuse()
            return
        conn._next_id = stream_id + 2
        for name, value in headers:
            if name == b":method":
                self._head_request = value == b"HEAD"
                break
        self.stream_id = stream_id
        self.state = ACTIVE
        self._local_ended = end_stream
        self._window = conn._peer_window
        conn.streams[stream_id] = self
        # The stateless encoder never indexes (so credentials never enter a compression context
        # other requests share) and marks authorization and cookie fields never-indexed.
        conn._send_block(stream_id, conn._encoder.encode(headers), end_stream)
        conn.dirty()

    def send_data(self, data: bytes, end_stream: bool = False) -> None:
        """Send request body bytes; what the peer's windows cannot take yet is queued."""
        if self.state is not ACTIVE or self._local_ended or self._end_pending:
            return
        if not data:
            if end_stream:
                self.end_request()
            return
        conn = self.connection
        if self._pending is None and not conn.write_blocked:
            size = len(data)
            if size <= self._window and size <= conn._window and size <= conn._peer_frame_size:
                stream_id = self.stream_id
                assert stream_id is not None
                out = conn._out
                out += _pack_header(
                    size >> 16, size & 0xFFFF, _DATA, _END_STREAM if end_stream else 0, stream_id
                )
                out += data
                self._window -= size
                conn._window -= size
                self._local_ended = end_stream
                conn.dirty()
                return
        if self._pending is None:
            self._pending = deque()
            conn.blocked[self] = None
        self._pending.append(data)
        self._pending_size += len(data)
        if end_stream:
            self._end_pending = True
        self._drain()
        if self._pending_size > HIGH_WATER and not self._write_paused:
            self._write_paused = True
            if self.owner is not None:
                self.owner.upstream_write_paused(True)

    def end_request(self) -> None:
        """END_STREAM on the request side (after any queued body bytes)."""
        if self.state is not ACTIVE or self._local_ended or self._end_pending:
            return
        if self._pending is not None:
            self._end_pending = True
            return
        stream_id = self.stream_id
        assert stream_id is not None
        conn = self.connection
        conn._out += _pack_header(0, 0, _DATA, _END_STREAM, stream_id)
        self._local_ended = True
        conn.dirty()

    def pause_reading(self) -> None:
        """Stop re-opening this stream's receive window: the peer stalls this stream only."""
        self.reading_paused = True

    def resume_reading(self) -> None:
        """Give the stream's withheld window back."""
        if not self.reading_paused:
            return
        self.reading_paused = False
        unacked = self._unacked
        stream_id = self.stream_id
        if unacked and self.state is ACTIVE and stream_id is not None:
            conn = self.connection
            if conn.state is CLOSED:
                return
            self._unacked = 0
            self._recv_window += unacked
            conn._out += _window_frame(stream_id, unacked)
            conn.dirty()

    def abort(self) -> None:
        """Drop the owner and reset the stream (CANCEL) unless it already ended."""
        self.owner = None
        if self.state is CLOSED:
            return
        self.state = CLOSED
        conn = self.connection
        stream_id = self.stream_id
        if stream_id is not None and conn.state is not CLOSED:
            conn._out += _rst_frame(stream_id, CANCEL)
            conn.dirty()
        conn.release_slot(self)

    close = abort  # a stream has nothing to close gracefully: the pool's release ends here

    # -- used by the connection ----------------------------------------------------------------

    def _drain(self) -> None:
        """Send queued body bytes as far as the windows allow; resume the owner below low water."""
        pending = self._pending
        if pending is None:
            return
        conn = self.connection
        out = conn._out
        stream_id = self.stream_id
        assert stream_id is not None
        frame_size = conn._peer_frame_size
        sent = False
        while pending and not conn.write_blocked:
            room = min(self._window, conn._window, frame_size)
            if room <= 0:
                break
            chunk = pending[0]
            size = len(chunk)
            if size <= room:
                pending.popleft()
            else:
                view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
                chunk, pending[0] = view[:room], view[room:]
                size = room
            self._pending_size -= size
            self._window -= size
            conn._window -= size
            last = not pending and self._end_pending
            out += _pack_header(
                size >> 16, size & 0xFFFF, _DATA, _END_STREAM if last else 0, stream_id
            )
            out += chunk
            sent = True
            if last:
                self._local_ended = True
        if not pending:
            self._pending = None
            conn.blocked.pop(self, None)
            if self._end_pending and not self._local_ended:
                out += _pack_header(0, 0, _DATA, _END_STREAM, stream_id)
                self._local_ended = sent = True
        if sent:
            conn.dirty()
        if self._write_paused and self._pending_size <= LOW_WATER:
            self._write_paused = False
            if self.owner is not None:
                self.owner.upstream_write_paused(False)

    def _complete(self) -> None:
        """The peer ended the response: free the slot, then tell the owner."""
        self.state = CLOSED
        conn = self.connection
        if not self._local_ended:
            # The response ended before the request did: the rest of the body is unwanted.
            stream_id = self.stream_id
            assert stream_id is not None
            conn._out += _rst_frame(stream_id, CANCEL)
            conn.dirty()
        conn.release_slot(self)
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.upstream_complete(self)

    def _lost(self, reason: str) -> None:
        owner = self.owner
        self.owner = None
        if self.state is CLOSED:
            return
        self.state = CLOSED
        self.connection.release_slot(self)
        if owner is not None:
            owner.upstream_lost(self, reason)

    def _refuse(self) -> None:
        """The request never left: free the slot now, tell the owner once its call returned."""
        self.state = CLOSED
        self.connection.release_slot(self)
        self.connection.loop.call_soon(self._notify_refused)

    def _notify_refused(self) -> None:
        owner = self.owner
        if owner is not None:
            self.owner = None
            owner.upstream_lost(self, "refused")


class H2ClientConnection(HeaderBlockReader, asyncio.Protocol):
    """An h2c connection to one endpoint carrying up to the peer's limit of concurrent streams.

    States: CONNECTING (until the peer's SETTINGS arrive: only then is its stream limit known),
    IDLE (no streams), ACTIVE, CLOSED. ``goaway`` marks a connection that takes no new streams.
    """

    __slots__ = (
        "_batch",
        "_buf",
        "_credit",
        "_decoder",
        "_encoder",
        "_flush_scheduled",
        "_in_batch",
        "_need",
        "_next_id",
        "_out",
        "_peer_frame_size",
        "_peer_window",
        "_recv_window",
        "_settled",
        "_window",
        "blocked",
        "endpoint",
        "goaway",
        "group",
        "idle_since",
        "loop",
        "max_streams",
        "pool",
        "ready",
        "registered",
        "reserved",
        "state",
        "streams",
        "transport",
        "write_blocked",
    )

    def __init__(self, pool: UpstreamPool, endpoint: Endpoint, group: H2Group) -> None:
        self.pool = cast(_PoolHooks, pool)
        self.endpoint = endpoint
        self.group = group
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.state = CONNECTING
        self.ready: asyncio.Future[None] = self.loop.create_future()  # the peer's SETTINGS came
        self.registered = False  # counted by the pool (set once ready)
        self.streams: dict[int, H2ClientStream] = {}  # by stream id, once their HEADERS went out
        self.reserved = 0  # streams handed out and not finished (sent or not)
        self.max_streams = STREAM_CAP
        self.goaway = False
        self.idle_since = 0.0
        self.write_blocked = False  # the socket buffer is full: body bytes wait on their streams
        self.blocked: dict[H2ClientStream, None] = {}  # streams with queued body bytes, in order
        self._batch: list[H2ClientStream] = []  # streams that got head or body in this read
        self._in_batch = False
        self._flush_scheduled = False
        self._credit = 0  # received bytes not yet given back as connection window
        self._out = bytearray()  # output of this read / loop iteration
        self._buf = bytearray()  # unparsed input
        self._need = 0  # buffered input needed before parsing again
        self._settled = False  # the peer's first SETTINGS arrived
        self._next_id = 1
        self._window = _DEFAULT_WINDOW  # connection window for request bytes
        self._recv_window = CONNECTION_WINDOW  # connection window for response bytes
        self._peer_window = _DEFAULT_WINDOW  # the peer's SETTINGS_INITIAL_WINDOW_SIZE
        self._peer_frame_size = _DEFAULT_FRAME_SIZE  # the peer's SETTINGS_MAX_FRAME_SIZE
        self._block: bytearray | None = None  # header block awaiting CONTINUATION
        self._block_sid = 0
        self._block_end = False
        self._block_frames = 0
        self._max_block = 2 * MAX_HEADER_LIST  # encoded header block bytes
        self._decoder = CachingDecoder(MAX_HEADER_LIST)
        self._encoder = StatelessEncoder()

    # -- used by the pool ----------------------------------------------------------------------

    def new_stream(self) -> H2ClientStream:
        """Take a stream slot (the pool checked ``reserved < max_streams``)."""
        self.reserved += 1
        self.state = ACTIVE
        return H2ClientStream(self)

    def close(self) -> None:
        """Say GOAWAY and close (idle expiry, pool shutdown); streams left are lost."""
        if self.state is CLOSED:
            return
        self.state = CLOSED
        transport = self.transport
        if transport is not None:
            out = self._out
            self._out = bytearray()
            out += _goaway_frame(0, NO_ERROR)
            transport.write(out)
            transport.close()

    def exhausted(self) -> None:
        """Stream ids ran out: behave as after a GOAWAY."""
        if not self.goaway:
            self.goaway = True
            self.pool.h2_draining(self)

    # -- used by streams -----------------------------------------------------------------------

    def dirty(self) -> None:
        """Output is waiting: write it when the current callback returns (coalesced)."""
        if not self._in_batch and not self._flush_scheduled:
            self._flush_scheduled = True
            self.loop.call_soon(self._flush)

    def release_slot(self, stream: H2ClientStream) -> None:
        """A stream finished: forget it and let the pool reuse the slot."""
        if stream.stream_id is not None:
            self.streams.pop(stream.stream_id, None)
        if stream._pending is not None:
            stream._pending = None
            self.blocked.pop(stream, None)
        self.reserved -= 1
        if self.state is CLOSED:
            return
        if not self.reserved:
            self.state = IDLE
            self.pool.h2_idle(self)
        elif self.group.waiting:
            self.pool.h2_capacity(self)

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(_PREFACE)

    def data_received(self, data: bytes) -> None:
        if self.state is CLOSED:
            return
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            data = bytes(buf)
            buf.clear()
        elif data.__class__ is not bytes:
            data = bytes(data)  # header blocks are sliced off as bytes (hashable for the cache)
        self._in_batch = True
        try:
            rest = self._receive(data)
            if rest:
                buf += rest
                self._need = 9 if len(rest) < 9 else 9 + int.from_bytes(rest[:3], "big")
            self._finish_batch()
        except _ConnectionError as exc:
            self._in_batch = False
            self._fail(exc.code)
            return
        finally:
            self._in_batch = False
        self._flush()
        if self.goaway and not self.reserved:
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        if not self.ready.done():
            self.ready.set_exception(
                ConnectionError(f"h2c connection to {self.endpoint} closed before its SETTINGS")
            )
        self.pool.forget(self)
        for stream in list(self.streams.values()):
            stream._lost("reset")

    def pause_writing(self) -> None:
        self.write_blocked = True

    def resume_writing(self) -> None:
        self.write_blocked = False
        self._window_opened(0)

    # -- input ---------------------------------------------------------------------------------

    def _receive(self, data: bytes) -> bytes:
        """Handle the complete frames in ``data``; returns the incomplete rest."""
        size = len(data)
        pos = 0
        streams = self.streams
        while size - pos >= 9:
            high, low, ftype, flags, sid = _unpack_header(data, pos)
            length = high << 16 | low
            if length > _DEFAULT_FRAME_SIZE:  # we never raise our SETTINGS_MAX_FRAME_SIZE
                raise _ConnectionError(FRAME_SIZE_ERROR, f"frame of {length} bytes announced")
            if not self._settled and (ftype != _SETTINGS or flags & _ACK):
                raise _ConnectionError(PROTOCOL_ERROR, "the server preface is not SETTINGS")
            end = pos + 9 + length
            if end > size:
                break
            sid &= 0x7FFFFFFF
            payload = data[pos + 9 : end]
            pos = end
            if self._block is not None and ftype != _CONTINUATION:
                raise _ConnectionError(PROTOCOL_ERROR, "header block interrupted")
            if ftype == _DATA:
                self._on_data(flags, sid, payload, streams.get(sid))
            elif ftype == _HEADERS:
                self._on_headers(flags, sid, payload)
            elif ftype == _WINDOW_UPDATE:
                self._on_window_update(sid, payload)
            elif ftype == _SETTINGS:
                self._on_settings(flags, sid, payload)
            elif ftype == _RST_STREAM:
                self._on_rst_stream(sid, payload)
            elif ftype == _PING:
                if sid:
                    raise _ConnectionError(PROTOCOL_ERROR, "PING on a stream")
                if length != 8:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "PING of the wrong size")
                if not flags & _ACK:
                    self._out += _PING_ACK + payload
            elif ftype == _GOAWAY:
                if sid:
                    raise _ConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
                if length < 8:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "GOAWAY too short")
                self._goaway_received(_U32x2.unpack_from(payload)[0] & 0x7FFFFFFF)
            elif ftype == _CONTINUATION:
                self._on_continuation(flags, sid, payload)
            elif ftype == _PRIORITY:
                if not sid:
                    raise _ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
                if length != 5:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
            elif ftype == _PUSH_PROMISE:
                raise _ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
            # other types are extensions: ignored
            if self.state is CLOSED:
                return b""
        return data[pos:] if pos < size else b""

    def _finish_batch(self) -> None:
        """Windows re-opened for what this read brought; owners told to flush."""
        if self._credit >= CONNECTION_CREDIT_BATCH:
            increment, self._credit = self._credit, 0
            self._recv_window += increment
            self._out += _window_frame(0, increment)
        batch = self._batch
        if batch:
            out = self._out
            for stream in batch:
                stream._in_batch = False
                unacked = stream._unacked
                if (
                    unacked >= STREAM_CREDIT_BATCH
                    and not stream.reading_paused
                    and stream.state is ACTIVE
                ):
                    stream_id = stream.stream_id
                    assert stream_id is not None
                    out += _window_frame(stream_id, unacked)
                    stream._recv_window += unacked
                    stream._unacked = 0
                owner = stream.owner
                if owner is not None:
                    owner.upstream_flush()
            batch.clear()

    def _unknown(self, sid: int, what: str) -> None:
        """A frame for a stream not open here: ignored if the stream was ours, else an error."""
        if not sid:
            raise _ConnectionError(PROTOCOL_ERROR, f"{what} on stream 0")
        if not sid & 1 or sid >= self._next_id:
            raise _ConnectionError(PROTOCOL_ERROR, f"{what} on idle stream {sid}")

    def _on_data(self, flags: int, sid: int, payload: bytes, stream: H2ClientStream | None) -> None:
        size = len(payload)  # flow-controlled length, padding included
        self._recv_window -= size
        if self._recv_window < 0:
            raise _ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._credit += size  # the connection window re-opens whoever reads
        if stream is None:
            self._unknown(sid, "DATA")
            return
        stream._recv_window -= size
        if stream._recv_window < 0:
            raise _ConnectionError(FLOW_CONTROL_ERROR, f"DATA beyond the window of stream {sid}")
        data = _unpad(payload) if flags & _PADDED else payload
        if not stream._headed:
            self._malformed(stream)  # DATA before the response head
            return
        stream._unacked += size
        count = len(data)
        if stream._expected >= 0:
            stream._received += count
            if stream._received > stream._expected or (
                flags & _END_STREAM and stream._received != stream._expected
            ):
                self._malformed(stream)  # the body does not match its content-length
                return
        owner = stream.owner
        if owner is not None:
            if count:
                owner.upstream_body(data)
            if not stream._in_batch:
                stream._in_batch = True
                self._batch.append(stream)
        if flags & _END_STREAM and stream.state is ACTIVE:
            stream._complete()

    def _on_header_block(self, sid: int, block: bytes, end_stream: bool) -> None:
        """A complete header block: a response head (1xx or final), or trailers."""
        try:
            headers = cast(Headers, self._decoder.decode(block, raw=True))
        except Exception as exc:  # HPACKError, oversized lists, what a broken block raises
            raise _ConnectionError(COMPRESSION_ERROR, f"header block: {exc!r}") from exc
        stream = self.streams.get(sid)
        if stream is None:
            self._unknown(sid, "HEADERS")
            return
        if stream._headed:
            # Trailers: they end the stream and carry no pseudo-headers.
            if (
                not end_stream
                or not valid_trailers(headers)
                or (0 <= stream._expected != stream._received)
            ):
                self._malformed(stream)
                return
            owner = stream.owner
            if owner is not None:
                owner.upstream_trailers(headers)
            if stream.state is ACTIVE:
                stream._complete()
            return
        status, fields, expected = _response_head(headers)
        if status < 200:
            if status < 100 or end_stream:
                self._malformed(stream)  # no or a bad :status, bad fields, or a 1xx ending it
                return
            owner = stream.owner
            if owner is not None:
                owner.upstream_informational(status)
            return
        stream._headed = True
        if stream._head_request or status == 204 or status == 304:
            expected = -1
        elif end_stream and expected > 0:
            self._malformed(stream)
            return
        stream._expected = expected
        owner = stream.owner
        if owner is not None:
            owner.upstream_head(stream, status, b"", fields)
            if not stream._in_batch:
                stream._in_batch = True
                self._batch.append(stream)
        if end_stream and stream.state is ACTIVE:
            stream._complete()

    def _on_window_update(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "WINDOW_UPDATE of the wrong size")
        increment = _U32.unpack(payload)[0] & 0x7FFFFFFF
        if not sid:
            if not increment:
                raise _ConnectionError(PROTOCOL_ERROR, "WINDOW_UPDATE of 0 on the connection")
            self._window += increment
            if self._window > MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, "connection window overflow")
            self._window_opened(0)
            return
        stream = self.streams.get(sid)
        if stream is None:
            self._unknown(sid, "WINDOW_UPDATE")
            return
        if not increment:
            self._malformed(stream)
            return
        stream._window += increment
        if stream._window > MAX_WINDOW:
            self._malformed(stream, FLOW_CONTROL_ERROR)
            return
        if stream._pending is not None:
            stream._drain()

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        stream = self.streams.get(sid)
        if stream is None:
            self._unknown(sid, "RST_STREAM")
            return
        code = _U32.unpack(payload)[0]
        stream._lost("refused" if code == REFUSED_STREAM else "reset")

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _ACK:
            if payload:
                raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        before = self.max_streams
        window_changed = False
        for ident, value in _parse_settings(payload):
            if ident == _MAX_CONCURRENT_STREAMS:
                self.max_streams = min(value, STREAM_CAP)
            elif ident == _INITIAL_WINDOW_SIZE:
                delta = value - self._peer_window
                self._peer_window = value
                if delta:
                    window_changed = True
                    for stream in self.streams.values():
                        stream._window += delta
                        if stream._window > MAX_WINDOW:
                            raise _ConnectionError(FLOW_CONTROL_ERROR, "stream window overflow")
            elif ident == _MAX_FRAME_SIZE:
                window_changed = window_changed or value != self._peer_frame_size
                self._peer_frame_size = value
            elif ident == _ENABLE_PUSH and value:
                raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS_ENABLE_PUSH from a server")
        self._out += _SETTINGS_ACK
        if window_changed:
            self._window_opened(0)
        if not self._settled:
            self._settled = True
            self.state = IDLE if not self.reserved else ACTIVE
            if not self.ready.done():
                self.ready.set_result(None)
        elif self.max_streams > before and self.group.waiting:
            self.pool.h2_capacity(self)

    def _goaway_received(self, last_stream_id: int) -> None:
        if not self.goaway:
            self.goaway = True
            self.pool.h2_draining(self)
        for stream_id, stream in list(self.streams.items()):
            if stream_id > last_stream_id:
                stream._lost("refused")

    def _malformed(self, stream: H2ClientStream, code: int = PROTOCOL_ERROR) -> None:
        """A stream error: RST_STREAM, and the stream alone is lost as a bad response."""
        stream_id = stream.stream_id
        assert stream_id is not None
        self._out += _rst_frame(stream_id, code)
        self.dirty()
        stream._lost("bad-response")

    # -- output --------------------------------------------------------------------------------

    def _send_block(self, sid: int, block: bytes, end_stream: bool) -> None:
        """A HEADERS frame (and CONTINUATION frames when the block is larger than a frame)."""
        header_block_frames(self._out, block, sid, end_stream, self._peer_frame_size)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        transport = self.transport
        if out and transport is not None and self.state is not CLOSED:
            self._out = bytearray()
            transport.write(out)

    def _window_opened(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None and stream._pending is not None:
                stream._drain()
        elif self.blocked:
            for stream in list(self.blocked):
                stream._drain()

    def _fail(self, code: int) -> None:
        """A connection error: say GOAWAY, drop every stream and the socket."""
        transport = self.transport
        if transport is not None and self.state is not CLOSED:
            out = self._out
            self._out = bytearray()
            out += _goaway_frame(0, code)
            transport.write(out)
        self.state = CLOSED
        self._batch.clear()
        if not self.ready.done():
            self.ready.set_exception(
                ConnectionError(f"{self.endpoint} did not speak h2c (HTTP/2 protocol error)")
            )
        for stream in list(self.streams.values()):
            stream._lost("bad-response")
        if transport is not None:
            transport.abort()


def _response_head(headers: Headers) -> tuple[int, Headers, int]:
    """(status, regular fields, content-length) of a response head; status 0 when malformed.

    Malformed: ``:status`` missing, repeated, not three digits, or after a regular field; any
    other pseudo-header; an invalid or upper-case name; a connection-specific field; CR, LF or NUL
    in a value, or a value with surrounding whitespace; a content-length that is not a number."""
    if not headers:
        return 0, headers, -1
    name, status_value = headers[0]
    if name != b":status" or len(status_value) != 3 or not status_value.isdigit():
        return 0, headers, -1
    fields = headers[1:]
    expected = -1
    for name, value in fields:
        if (
            not name
            or name.translate(None, NAME_BYTES)
            or name in CONNECTION_SPECIFIC
            or len(value.strip(WHITESPACE)) != len(value)
        ):
            return 0, headers, -1
        if name == b"content-length":
            if not value.isdigit() or (expected >= 0 and int(value) != expected):
                return 0, headers, -1
            expected = int(value)
    if fields and VALUE_CTL.search(b"".join([value for _, value in fields])) is not None:
        return 0, headers, -1
    return int(status_value), fields, expected


def valid_trailers(headers: Headers) -> bool:
    """Trailers carry regular fields only: valid names, values without CR, LF, NUL or surrounding
    whitespace (what ``h2``'s inbound validation refused too)."""
    for name, value in headers:
        if (
            not name
            or name.translate(None, NAME_BYTES)
            or name in CONNECTION_SPECIFIC
            or len(value.strip(WHITESPACE)) != len(value)
            or VALUE_CTL.search(value) is not None
        ):
            return False
    return True
