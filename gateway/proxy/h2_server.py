"""The HTTP/2 server engine (RFC 9113): streams in, handlers out, limits and floods enforced.

``H2ServerConnection`` is the asyncio protocol of one HTTP/2 connection (a listener's protocol,
one an HTTP/1.1 connection switches to on the prior-knowledge preface, or, through ``take_over``,
after an h2c upgrade); each request stream goes to a ``StreamHandler`` made by a
``HandlerFactory``, which answers through its ``ServerStream``. Flow control works per stream in
both directions: request bytes are credited back when the handler calls ``consumed()`` (the
connection window re-opens on receipt, so one stalled stream never stalls the others), and
response bytes the client has no window for are buffered per stream, with ``write_paused``
telling the handler to stop producing: past ``write_high_water`` on the stream, and, for every
stream with no window left, once the connection's ``connection_buffer`` or the process's
``BufferBudget`` is spent (so a client that never opens its windows pins no upstream bodies).

Why our own frame layer and stream state machine rather than the ``h2`` library: an engine on
``h2`` spent ~85 us of CPU per request, most of it in ``h2`` itself; this one spends ~10 us
(``python -m bench.h2_core`` measures it next to a plain ``h2`` server). HPACK decoding stays
with the ``hpack`` library's decoder (its dynamic table is the hard part), behind a decode cache;
responses go out through a stateless encoder. Request validation, the limits (``H2Limits``), the
flood meters, the HPACK coders and the protocol constants live in :mod:`gateway.proxy.h2_common`,
shared with the client engine (:mod:`gateway.proxy.h2_client`).

What the engine refuses, and how:

- more streams than ``max_concurrent_streams``: ``RST_STREAM(REFUSED_STREAM)`` for the extra one;
- malformed requests (missing or unknown pseudo-headers, pseudo-headers after regular fields,
  upper-case or invalid names, connection-specific fields, ``te`` other than ``trailers``, CR, LF
  or NUL in a value, a value with surrounding whitespace, an empty or non-origin ``:path``,
  neither ``:authority`` nor ``host``, a bad ``content-length``, pseudo-headers in trailers):
  ``RST_STREAM(PROTOCOL_ERROR)``;
- more than one ``host``, or a ``host`` naming another authority than ``:authority`` (compared
  after scheme-based normalization, RFC 9113 8.3.1): ``400`` naming the problem, then the
  stream closes (the client still sending gets ``RST_STREAM(NO_ERROR)``);
- ``CONNECT`` (well-formed, not supported here): ``405`` on the stream;
- a decoded header list over ``max_header_list_size``: ``431`` on the stream; over twice that
  the HPACK decoder stops and the connection gets ``GOAWAY(ENHANCE_YOUR_CALM)``;
- rapid resets (client ``RST_STREAM`` of unfinished streams), streams opened past the limit
  (refused: a budget of their own, as refusing is our act, not the client's reset), SETTINGS and
  PING floods over their budget per ``flood_window``: ``GOAWAY(ENHANCE_YOUR_CALM)``; streams
  already accepted may finish, then the connection closes; a second flood aborts it.

How frames are handled:

- frames are parsed from the read buffer with ``struct``; one larger than our
  SETTINGS_MAX_FRAME_SIZE is a connection error (FRAME_SIZE_ERROR) from its header alone;
- a header block (HEADERS + CONTINUATION) is bounded in frames and bytes; it is always decoded,
  even for streams that are refused or ignored, so the HPACK table stays in step;
- client streams must be odd and increasing; DATA or RST_STREAM or WINDOW_UPDATE on an idle
  stream, PUSH_PROMISE, bad SETTINGS values, a zero WINDOW_UPDATE on the connection: connection
  errors (GOAWAY, then close); DATA beyond a window: FLOW_CONTROL_ERROR;
- frames on streams the engine reset are ignored (the client may have sent them before it saw
  the RST_STREAM); DATA or HEADERS on other closed streams: STREAM_CLOSED; on a half-closed
  (remote) stream: RST_STREAM(STREAM_CLOSED);
- a ``content-length`` that is not a number or not the length of the body: the stream is
  malformed (RST_STREAM(PROTOCOL_ERROR));
- output is collected in one buffer and written once per read (sends outside a read are
  coalesced with one ``call_soon`` per loop iteration).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import struct
from collections.abc import Callable
from typing import cast

from hpack.exceptions import OversizedHeaderListError

from gateway.proxy.buffer_budget import BufferBudget
from gateway.proxy.h2_common import (
    BAD_HOST_MESSAGES,
    CANCEL,
    COMPRESSION_ERROR,
    ENHANCE_YOUR_CALM,
    FLOW_CONTROL_ERROR,
    FRAME_SIZE_ERROR,
    INTERNAL_ERROR,
    MALFORMED,
    MAX_WINDOW,
    NO_ERROR,
    PREFACE,
    PROTOCOL_ERROR,
    REFUSED_STREAM,
    STATUS_BYTES,
    STREAM_CLOSED,
    SWITCHING_PROTOCOLS,
    CachingDecoder,
    FloodMeter,
    H2Limits,
    HandlerFactory,
    Headers,
    StatelessEncoder,
    StreamHandler,
    check_request,
    response_block,
    valid_trailers,
)

__all__ = ["H2ServerConnection", "ServerStream"]

log = logging.getLogger(__name__)

# Frame types and flags (RFC 9113 6).
_DATA = 0x0
_HEADERS = 0x1
_PRIORITY = 0x2
_RST_STREAM = 0x3
_SETTINGS = 0x4
_PUSH_PROMISE = 0x5
_PING = 0x6
_GOAWAY = 0x7
_WINDOW_UPDATE = 0x8
_CONTINUATION = 0x9
_END_STREAM = 0x1
_ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20

# SETTINGS identifiers.
_HEADER_TABLE_SIZE = 0x1
_ENABLE_PUSH = 0x2
_MAX_CONCURRENT_STREAMS = 0x3
_INITIAL_WINDOW_SIZE = 0x4
_MAX_FRAME_SIZE = 0x5
_MAX_HEADER_LIST_SIZE = 0x6
_ENABLE_CONNECT_PROTOCOL = 0x8

_CONNECTION_WINDOW = 16 * 1024 * 1024
_DEFAULT_WINDOW = 65535
_DEFAULT_FRAME_SIZE = 16384
# A header block may span at most this many CONTINUATION frames (h2 allows 64 as well).
_MAX_CONTINUATIONS = 64
# Streams the engine reset, whose late frames are ignored: the newest this many are remembered.
_IGNORED_KEPT = 1024

_FRAME_HEADER = struct.Struct(">BHBBL")  # length (24 bits as 8 + 16), type, flags, stream id
_pack_header = _FRAME_HEADER.pack
_unpack_header = _FRAME_HEADER.unpack_from
_SETTING = struct.Struct(">HL")
_U32 = struct.Struct(">L")
_U32x2 = struct.Struct(">LL")


class _ConnectionError(Exception):
    """A connection error (RFC 9113 5.4.1): GOAWAY with ``code``, then close."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def _frame(ftype: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    size = len(payload)
    return _pack_header(size >> 16, size & 0xFFFF, ftype, flags, sid) + payload


def _rst_frame(sid: int, code: int) -> bytes:
    return _pack_header(0, 4, _RST_STREAM, 0, sid) + _U32.pack(code)


def _goaway_frame(last: int, code: int) -> bytes:
    return _pack_header(0, 8, _GOAWAY, 0, 0) + _U32x2.pack(last, code)


def _window_frame(sid: int, increment: int) -> bytes:
    return _pack_header(0, 4, _WINDOW_UPDATE, 0, sid) + _U32.pack(increment)


def _unpad(payload: bytes) -> bytes:
    """The data of a PADDED DATA frame: the pad-length byte and the padding removed."""
    size = len(payload)
    if not size or payload[0] >= size:
        raise _ConnectionError(PROTOCOL_ERROR, "DATA padding exceeds the payload")
    return payload[1 : size - payload[0]]


def _parse_settings(payload: bytes) -> list[tuple[int, int]]:
    """A SETTINGS payload as (identifier, value) pairs; values checked per RFC 9113 6.5.2."""
    if len(payload) % 6:
        raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
    pairs = list(_SETTING.iter_unpack(payload))
    for ident, value in pairs:
        if ident in (_ENABLE_PUSH, _ENABLE_CONNECT_PROTOCOL):
            if value > 1:
                raise _ConnectionError(PROTOCOL_ERROR, f"SETTINGS {ident} = {value}")
        elif ident == _INITIAL_WINDOW_SIZE:
            if value > MAX_WINDOW:
                raise _ConnectionError(FLOW_CONTROL_ERROR, f"INITIAL_WINDOW_SIZE = {value}")
        elif ident == _MAX_FRAME_SIZE and not 16384 <= value <= 16777215:
            raise _ConnectionError(PROTOCOL_ERROR, f"MAX_FRAME_SIZE = {value}")
    return pairs


def _content_length(headers: Headers) -> int:
    """The request's ``content-length`` (-1 when absent, -2 when invalid or inconsistent)."""
    found = -1
    for name, value in headers:
        if name == b"content-length":
            if not value.isdigit():
                return -2
            length = int(value)
            if found >= 0 and length != found:
                return -2
            found = length
    return found


class ServerStream:
    """One request stream, as the handler sees it: the response is sent through it.

    Sends after the stream closed (reset, connection gone) are ignored; ``closed`` tells."""

    __slots__ = (
        "_conn",
        "_ending",
        "_eos",
        "_expected",
        "_headers_sent",
        "_outstanding",
        "_paused",
        "_pending",
        "_received",
        "_recv_window",
        "_trailers",
        "_unacked",
        "_window",
        "bodiless",
        "closed",
        "handler",
        "remote_ended",
        "stream_id",
    )

    def __init__(self, conn: H2ServerConnection, stream_id: int) -> None:
        self.stream_id = stream_id
        self._conn = conn
        self.handler: StreamHandler | None = None
        # True once the server can send nothing more (response ended, reset, connection gone).
        self.closed = False
        # True once the request side is over (END_STREAM delivered, reset, connection gone).
        self.remote_ended = False
        # True when the request's HEADERS carried END_STREAM: known to the factory, which can
        # treat the request as bodiless before end() is called.
        self.bodiless = False
        self._headers_sent = False
        self._ending = False  # end requested while response bytes wait for window
        self._pending: bytearray | None = None
        self._trailers: Headers | None = None
        self._paused = False
        self._outstanding = 0  # request bytes delivered but not yet consumed()
        self._unacked = 0  # consumed bytes not yet returned with WINDOW_UPDATE
        self._window = conn._peer_window  # response bytes the client accepts now
        self._recv_window = conn._limits.initial_window_size  # request bytes we accept now
        self._expected = -1  # content-length, -1 when absent
        self._received = 0  # request body bytes so far
        self._eos = False  # the client's END_STREAM arrived (its delivery may be under way)

    def __repr__(self) -> str:
        return f"<ServerStream {self.stream_id} closed={self.closed}>"

    # -- response ------------------------------------------------------------------------------

    def send_headers(self, status: int, headers: Headers, end_stream: bool = False) -> None:
        """Send the response head (1xx heads may precede the final one).

        Names are lower-cased and connection-specific fields dropped."""
        if self.closed or self._ending:
            return
        if self._headers_sent:
            raise RuntimeError(f"stream {self.stream_id}: response headers already sent")
        conn = self._conn
        conn._send_block(self.stream_id, response_block(status, headers), end_stream)
        if status >= 200:
            self._headers_sent = True
        conn._dirty()
        if end_stream:
            self._sent_end()

    def send_data(self, data: bytes, end_stream: bool = False) -> None:
        """Send body bytes: what the flow-control windows allow now, the rest when they open."""
        if self.closed or self._ending:
            return
        if not self._headers_sent:
            raise RuntimeError(f"stream {self.stream_id}: send_headers() before send_data()")
        if self._pending is not None:
            self._pending += data
            self._conn._held(len(data))
            self._ending = end_stream
            self._drain()
            return
        size = len(data)
        if not size and not end_stream:
            return
        conn = self._conn
        sid = self.stream_id
        window = min(self._window, conn._window)
        frame_size = conn._peer_frame_size
        out = conn._out
        if size <= window and size <= frame_size:
            out += _pack_header(0, size, _DATA, end_stream, sid)
            out += data
            sent = size
        else:
            sent = 0
            limit = min(size, window)
            while sent < limit:
                n = min(frame_size, limit - sent)
                last = end_stream and sent + n == size
                out += _pack_header(n >> 16, n & 0xFFFF, _DATA, last, sid)
                out += data[sent : sent + n]
                sent += n
        self._window -= sent
        conn._window -= sent
        conn._dirty()
        if sent == size and (sent or window >= 0):
            if end_stream:
                self._sent_end()
            return
        # The rest waits for WINDOW_UPDATE (an empty END_STREAM too, while the window is < 0).
        self._pending = bytearray(memoryview(data)[sent:])
        self._ending = end_stream
        conn._blocked[sid] = self
        conn._held(size - sent)
        self._check_pause()

    def send_trailers(self, headers: Headers) -> None:
        """Send trailers and end the stream (after buffered body bytes)."""
        if self.closed or self._ending:
            return
        if not self._headers_sent:
            raise RuntimeError(f"stream {self.stream_id}: send_headers() before send_trailers()")
        block = response_block(None, headers)
        if self._pending is not None:
            self._trailers = block
            self._ending = True
            return
        conn = self._conn
        conn._send_block(self.stream_id, block, True)
        conn._dirty()
        self._sent_end()

    def end(self) -> None:
        """End the response (empty DATA with END_STREAM) after buffered body bytes.

        Without a response head the stream is reset with INTERNAL_ERROR instead."""
        if self.closed or self._ending:
            return
        if not self._headers_sent:
            self.reset(INTERNAL_ERROR)
            return
        if self._pending is not None:
            self._ending = True
            self._drain()
            return
        self.send_data(b"", end_stream=True)

    def reset(self, error_code: int = CANCEL) -> None:
        """Reset the stream (RST_STREAM, default CANCEL); the handler is not called back."""
        if self.closed:
            return
        self.closed = True
        self.remote_ended = True
        self._drop_pending()
        conn = self._conn
        conn._reset(self.stream_id, error_code)
        conn._remove(self)

    # -- request body backpressure -------------------------------------------------------------

    def consumed(self, size: int) -> None:
        """The handler passed on ``size`` request-body bytes: re-open the stream's window."""
        if self.remote_ended or size <= 0:
            return
        size = min(size, self._outstanding)
        self._outstanding -= size
        self._unacked += size
        if self._unacked >= self._conn._stream_credit_at:
            self._credit()

    def _credit(self) -> None:
        increment, self._unacked = self._unacked, 0
        if not increment or self.remote_ended:
            return
        self._recv_window += increment
        conn = self._conn
        conn._out += _window_frame(self.stream_id, increment)
        conn._dirty()

    # -- engine side ---------------------------------------------------------------------------

    def _drain(self) -> None:
        """Send buffered bytes as far as the windows allow; finish the stream if asked."""
        pending = self._pending
        if pending is None:
            return
        conn = self._conn
        sid = self.stream_id
        out = conn._out
        window = min(self._window, conn._window)
        frame_size = conn._peer_frame_size
        sent = 0
        while pending and window > 0:
            n = min(window, frame_size, len(pending))
            out += _pack_header(n >> 16, n & 0xFFFF, _DATA, 0, sid)
            out += pending[:n]
            del pending[:n]
            window -= n
            sent += n
        self._window -= sent
        conn._window -= sent
        if sent:
            conn._held(-sent)
        if pending or (window < 0 and self._ending and self._trailers is None):
            conn._blocked[sid] = self
        else:
            self._pending = None
            conn._blocked.pop(sid, None)
            if self._ending:
                if self._trailers is not None:
                    conn._send_block(sid, self._trailers, True)
                else:
                    out += _pack_header(0, 0, _DATA, _END_STREAM, sid)
        conn._dirty()
        self._check_pause()
        if self._ending and self._pending is None and not self.closed:
            self._sent_end()

    def _check_pause(self) -> None:
        """Pause the handler while the client cannot take more: the transport is full, this
        stream holds more than ``write_high_water``, or it has no window left while the
        connection's (or the process's) buffer budget is spent; resume when none holds."""
        handler = self.handler
        if handler is None or self.closed:
            return
        conn = self._conn
        pending = self._pending
        if self._paused:
            if pending is None and not conn._transport_paused and not self._starved():
                self._paused = False
                handler.write_paused(False)
            else:
                conn._wait_for_budget()  # still paused: be woken when the process has room
        elif (
            conn._transport_paused
            or (pending is not None and len(pending) > conn._limits.write_high_water)
            or self._starved()
        ):
            self._paused = True
            conn._wait_for_budget()
            handler.write_paused(True)

    def _starved(self) -> bool:
        """No window to send into, and no budget left to buffer in."""
        conn = self._conn
        return (
            self._pending is not None or self._window <= 0 or conn._window <= 0
        ) and conn._spent()

    def _drop_pending(self) -> None:
        """Forget the buffered response bytes (the stream ended or was reset)."""
        pending = self._pending
        if pending is not None:
            self._pending = None
            if pending:
                self._conn._held(-len(pending))

    def _sent_end(self) -> None:
        """END_STREAM went out: the response is complete."""
        self.closed = True
        self._drop_pending()
        conn = self._conn
        if self.remote_ended:
            conn._remove(self)
            return
        if not self._eos:
            # The client is still sending: ask it to stop, without error (RFC 9113 8.1).
            self.remote_ended = True
            conn._reset(self.stream_id, NO_ERROR)
            conn._remove(self)
        # else the client's END_STREAM is being delivered: end() returns, then the stream goes.


class HeaderBlockReader:
    """HEADERS and CONTINUATION frames in, for both engines: padding and priority fields
    stripped, a block split over CONTINUATION frames gathered (bounded in frames and bytes),
    then handed whole to ``_on_header_block(sid, block, end_stream)``.

    The engine sets the state in its ``__init__``: ``_block`` (the block being gathered, or None),
    ``_block_sid``, ``_block_end``, ``_block_frames`` and ``_max_block`` (encoded bytes allowed).
    """

    __slots__ = ("_block", "_block_end", "_block_frames", "_block_sid", "_max_block")

    _block: bytearray | None
    _block_sid: int
    _block_end: bool
    _block_frames: int
    _max_block: int

    def _on_header_block(self, sid: int, block: bytes, end_stream: bool) -> None:
        raise NotImplementedError

    def _on_headers(self, flags: int, sid: int, payload: bytes) -> None:
        if not sid:
            raise _ConnectionError(PROTOCOL_ERROR, "HEADERS on stream 0")
        start = 0
        end = len(payload)
        if flags & _PADDED:
            if not end:
                raise _ConnectionError(FRAME_SIZE_ERROR, "HEADERS too short for padding")
            start = 1
            end -= payload[0]
        if flags & _PRIORITY_FLAG:
            start += 5
        if end < start:
            raise _ConnectionError(PROTOCOL_ERROR, "HEADERS padding exceeds the payload")
        if start or end != len(payload):
            payload = payload[start:end]
        if flags & _END_HEADERS:
            self._on_header_block(sid, payload, bool(flags & _END_STREAM))
            return
        if len(payload) > self._max_block:
            raise _ConnectionError(ENHANCE_YOUR_CALM, "header block too large")
        self._block = bytearray(payload)
        self._block_sid = sid
        self._block_end = bool(flags & _END_STREAM)
        self._block_frames = 0

    def _on_continuation(self, flags: int, sid: int, payload: bytes) -> None:
        block = self._block
        if block is None or sid != self._block_sid:
            raise _ConnectionError(PROTOCOL_ERROR, "unexpected CONTINUATION")
        self._block_frames += 1
        if self._block_frames > _MAX_CONTINUATIONS:
            raise _ConnectionError(PROTOCOL_ERROR, "too many CONTINUATION frames")
        block += payload
        if len(block) > self._max_block:
            raise _ConnectionError(ENHANCE_YOUR_CALM, "header block too large")
        if flags & _END_HEADERS:
            self._block = None
            self._on_header_block(sid, bytes(block), self._block_end)


def header_block_frames(
    out: bytearray, block: bytes, sid: int, end_stream: bool, frame_size: int
) -> None:
    """Append a header block to ``out`` as a HEADERS frame, followed by CONTINUATION frames
    when the block is larger than the peer's ``frame_size``."""
    size = len(block)
    flags = _END_STREAM if end_stream else 0
    if size <= frame_size:
        out += _pack_header(size >> 16, size & 0xFFFF, _HEADERS, flags | _END_HEADERS, sid)
        out += block
        return
    ftype = _HEADERS
    for start in range(0, size, frame_size):
        chunk = block[start : start + frame_size]
        n = len(chunk)
        if start + n >= size:
            flags |= _END_HEADERS
        out += _pack_header(n >> 16, n & 0xFFFF, ftype, flags, sid)
        out += chunk
        ftype = _CONTINUATION
        flags = 0


class H2ServerConnection(HeaderBlockReader, asyncio.Protocol):
    """An HTTP/2 server connection: streams in, handlers out, limits and floods enforced.

    Counters (plain ints): ``streams_refused`` (REFUSED_STREAM sent), ``flood_goaways``
    (ENHANCE_YOUR_CALM for reset, SETTINGS or PING floods), ``protocol_errors`` (connection
    errors: GOAWAY and close), ``malformed_streams`` (PROTOCOL_ERROR resets),
    ``headers_too_large`` (431 answers). ``activity`` grows with every read and write."""

    __slots__ = (
        "_blocked",
        "_budget",
        "_buf",
        "_buffered",
        "_conn_credit",
        "_conn_credit_at",
        "_dead",
        "_decoder",
        "_encoder",
        "_factory",
        "_flush_scheduled",
        "_goaway_last",
        "_highest",
        "_ignored",
        "_in_receive",
        "_last_accepted",
        "_limits",
        "_loop",
        "_need",
        "_on_close",
        "_out",
        "_peer_frame_size",
        "_peer_window",
        "_ping_meter",
        "_preface",
        "_recv_window",
        "_refusal_meter",
        "_reset_meter",
        "_settings_meter",
        "_skip",
        "_stream_credit_at",
        "_streams",
        "_transport_paused",
        "_window",
        "activity",
        "client_ip",
        "flood_goaways",
        "headers_too_large",
        "malformed_streams",
        "protocol_errors",
        "streams_refused",
        "transport",
    )

    def __init__(
        self,
        factory: HandlerFactory,
        limits: H2Limits | None = None,
        *,
        client_ip: str = "",
        on_close: Callable[[H2ServerConnection], None] | None = None,
        budget: BufferBudget | None = None,
    ) -> None:
        limits = limits or H2Limits()
        # Response bytes held beyond the client's windows: this connection's, and the process's
        # (shared by its connections) when given.
        self._buffered = 0
        self._budget = budget
        self._factory = factory
        self._limits = limits
        self._on_close = on_close
        self.client_ip = client_ip
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._streams: dict[int, ServerStream] = {}
        self._blocked: dict[int, ServerStream] = {}  # streams with response bytes awaiting window
        # Streams the engine reset (or never opened) whose late frames are ignored.
        self._ignored: dict[int, None] = {}
        # Lists up to twice the advertised size are decoded and answered 431 on their stream; the
        # decoder stops beyond that (its table is then lost: GOAWAY).
        self._decoder = CachingDecoder(2 * limits.max_header_list_size)
        self._encoder = StatelessEncoder()
        self._max_block = 2 * limits.max_header_list_size + 1024  # encoded header block bytes
        self._buf = bytearray()  # unparsed input
        self._out = bytearray()  # output of this read / loop iteration
        self._preface = 0  # 0: awaiting the client preface, 1: its SETTINGS, 2: past both
        self._need = 0  # buffered input needed before parsing again
        self._block: bytearray | None = None  # header block awaiting CONTINUATION
        self._block_sid = 0
        self._block_end = False
        self._block_frames = 0
        self._skip: set[int] | None = None  # streams opened and reset within the current read
        self._highest = 0  # highest client stream id seen
        self._window = _DEFAULT_WINDOW  # connection window for response bytes
        self._peer_window = _DEFAULT_WINDOW  # client's SETTINGS_INITIAL_WINDOW_SIZE
        self._peer_frame_size = _DEFAULT_FRAME_SIZE  # client's SETTINGS_MAX_FRAME_SIZE
        self._recv_window = _DEFAULT_WINDOW  # connection window for request bytes
        self._conn_credit = 0
        self._conn_credit_at = max(_CONNECTION_WINDOW, limits.initial_window_size) // 4
        self._stream_credit_at = max(1, limits.initial_window_size // 2)
        self._reset_meter = FloodMeter(limits.reset_flood, limits.flood_window)
        self._refusal_meter = FloodMeter(limits.refused_flood, limits.flood_window)
        self._settings_meter = FloodMeter(limits.settings_flood, limits.flood_window)
        self._ping_meter = FloodMeter(limits.ping_flood, limits.flood_window)
        self._in_receive = False
        self._flush_scheduled = False
        self._transport_paused = False
        self._dead = False
        self._goaway_last: int | None = None  # set once a GOAWAY went out
        self._last_accepted = 0
        self.activity = 0
        self.streams_refused = 0
        self.flood_goaways = 0
        self.protocol_errors = 0
        self.malformed_streams = 0
        self.headers_too_large = 0

    @property
    def active_streams(self) -> int:
        """Request streams handed to handlers and not finished."""
        return len(self._streams)

    @property
    def draining(self) -> bool:
        """True once a GOAWAY went out (drain or flood): no new streams are accepted."""
        return self._goaway_last is not None

    # -- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._attach(transport)
        self._start()
        self._flush()

    def take_over(
        self,
        transport: asyncio.BaseTransport,
        http2_settings: bytes,
        headers: Headers,
        rest: bytes = b"",
    ) -> None:
        """Continue an HTTP/1.1 connection after ``Upgrade: h2c`` (RFC 7540 3.2).

        Writes the 101, becomes the transport's protocol and runs the upgraded request as stream
        1; ``rest`` is what the HTTP/1.1 side read past the request. Raises ``ValueError`` for a
        bad ``HTTP2-Settings`` before writing anything (answer 400 then)."""
        value = bytes(http2_settings).strip()
        try:
            payload = base64.urlsafe_b64decode(value + b"=" * (-len(value) % 4))
            self._apply_settings(_parse_settings(payload))
        except (binascii.Error, ValueError, _ConnectionError) as exc:
            raise ValueError(f"invalid HTTP2-Settings header: {exc}") from exc
        self._attach(transport)
        self.activity += 1
        self.transport.write(SWITCHING_PROTOCOLS)
        self._start()
        self._flush()
        transport.set_protocol(self)
        self._highest = 1
        self._in_receive = True
        try:
            self._open(1, headers, True)
        finally:
            self._in_receive = False
        self._flush()
        if rest:
            self.data_received(rest)

    def data_received(self, data: bytes) -> None:
        self.activity += 1
        if self._dead:
            return
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return
            data = bytes(buf)
            buf.clear()
        elif data.__class__ is not bytes:
            data = bytes(data)  # payloads are sliced off as bytes (hashable for the HPACK cache)
        self._in_receive = True
        try:
            rest = self._receive(data)
            if rest:
                buf += rest
                if self._preface < 2:
                    self._need = 0
                elif len(rest) < 9:
                    self._need = 9
                else:
                    self._need = 9 + int.from_bytes(rest[:3], "big")
        except _ConnectionError as exc:
            log.debug("HTTP/2 connection error from %s: %s", self.client_ip, exc)
            self._in_receive = False
            self._fail(exc.code)
            return
        except Exception:  # an engine or hpack bug must not reach the event loop
            log.exception("HTTP/2 input from %s failed", self.client_ip)
            self._in_receive = False
            self._fail(INTERNAL_ERROR)
            return
        finally:
            self._skip = None
        self._in_receive = False
        self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._drop_streams(CANCEL)
        if self._budget is not None:
            self._budget.forget(self)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)

    def pause_writing(self) -> None:
        self._transport_paused = True
        self._recheck_pause()

    def resume_writing(self) -> None:
        self._transport_paused = False
        self._recheck_pause()

    # -- control -------------------------------------------------------------------------------

    def drain(self) -> None:
        """Graceful shutdown: GOAWAY(NO_ERROR), finish the open streams, then close.

        Streams the client opens after the GOAWAY are refused (REFUSED_STREAM, safe to retry).
        There is no deadline here: call ``abort()`` when the grace period is over."""
        if self._dead or self.transport is None:
            return
        if self._goaway_last is None:
            self._goaway(NO_ERROR)
        if not self._streams:
            self._close()

    def unfinished_opening(self) -> object | None:
        """What the client has begun and not finished sending, or None: the connection itself
        while its preface and SETTINGS are incomplete, else a header block awaiting
        CONTINUATION (a new object per block)."""
        if self._dead:
            return None
        if self._preface < 2:
            return self
        return self._block

    def give_up(self) -> None:
        """Close a connection that did not finish what it began in time: GOAWAY, then close."""
        if self._dead or self.transport is None:
            return
        self._block = None
        self._out += _goaway_frame(self._last_accepted, NO_ERROR)
        self._teardown(abort=False)

    def handlers(self) -> list[StreamHandler]:
        """The handlers of the streams open now."""
        return [s.handler for s in self._streams.values() if s.handler is not None]

    def abort(self) -> None:
        """Close the connection now; handlers of open streams get ``reset(CANCEL)``."""
        self._dead = True
        self._drop_streams(CANCEL)
        if self.transport is not None:
            self.transport.abort()

    # -- input ---------------------------------------------------------------------------------

    def _receive(self, data: bytes) -> bytes:
        """Handle the complete frames in ``data``; returns the incomplete rest."""
        if self._preface < 2:
            if not self._preface:
                if len(data) < 24:
                    if PREFACE.startswith(data):
                        return data
                    raise _ConnectionError(PROTOCOL_ERROR, "invalid client preface")
                if not data.startswith(PREFACE):
                    raise _ConnectionError(PROTOCOL_ERROR, "invalid client preface")
                data = data[24:]
                self._preface = 1
            if len(data) < 9:
                return data  # the first frame's header is checked below
            if data[3] != _SETTINGS or data[4] & _ACK:
                raise _ConnectionError(PROTOCOL_ERROR, "the preface is not followed by SETTINGS")
            self._preface = 2
        size = len(data)
        if 3 in data:  # cheap pre-test (memchr); a byte 3 may be an RST_STREAM frame type
            self._skip = self._resets_in(data, size)
        max_frame = self._limits.max_frame_size
        pos = 0
        streams = self._streams
        while size - pos >= 9:
            high, low, ftype, flags, sid = _unpack_header(data, pos)
            length = high << 16 | low
            if length > max_frame:
                raise _ConnectionError(FRAME_SIZE_ERROR, f"frame of {length} bytes announced")
            end = pos + 9 + length
            if end > size:
                break
            sid &= 0x7FFFFFFF
            payload = data[pos + 9 : end]
            pos = end
            if self._block is not None and ftype != _CONTINUATION:
                raise _ConnectionError(PROTOCOL_ERROR, "header block interrupted")
            if ftype == _HEADERS:
                self._on_headers(flags, sid, payload)
            elif ftype == _DATA:
                self._on_data(flags, sid, payload, streams.get(sid))
            elif ftype == _WINDOW_UPDATE:
                self._on_window_update(sid, payload)
            elif ftype == _RST_STREAM:
                self._on_rst_stream(sid, payload)
            elif ftype == _SETTINGS:
                self._on_settings(flags, sid, payload)
            elif ftype == _PING:
                self._on_ping(flags, sid, payload)
            elif ftype == _CONTINUATION:
                self._on_continuation(flags, sid, payload)
            elif ftype == _PRIORITY:
                if not sid:
                    raise _ConnectionError(PROTOCOL_ERROR, "PRIORITY on stream 0")
                if length != 5:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "PRIORITY of the wrong size")
            elif ftype == _GOAWAY:
                if sid:
                    raise _ConnectionError(PROTOCOL_ERROR, "GOAWAY on a stream")
                if length < 8:
                    raise _ConnectionError(FRAME_SIZE_ERROR, "GOAWAY too short")
                # We send nothing after the client's GOAWAY: the streams cannot finish.
                self._teardown(abort=False)
            elif ftype == _PUSH_PROMISE:
                raise _ConnectionError(PROTOCOL_ERROR, "PUSH_PROMISE from a client")
            # other types are extensions: ignored
            if self._dead:
                return b""
        return data[pos:] if pos < size else b""

    @staticmethod
    def _resets_in(data: bytes, size: int) -> set[int] | None:
        """Stream ids of the complete RST_STREAM frames in ``data`` (None when there are none)."""
        found: set[int] | None = None
        pos = 0
        while size - pos >= 9:
            high, low, ftype, _, sid = _unpack_header(data, pos)
            pos += 9 + (high << 16 | low)
            if pos > size:
                break
            if ftype == _RST_STREAM:
                if found is None:
                    found = set()
                found.add(sid & 0x7FFFFFFF)
        return found

    def _decode(self, block: bytes) -> Headers:
        try:
            return cast(Headers, self._decoder.decode(block, raw=True))
        except OversizedHeaderListError as exc:
            raise _ConnectionError(ENHANCE_YOUR_CALM, "header list too large") from exc
        except Exception as exc:  # HPACKError, and what a broken block makes hpack raise
            raise _ConnectionError(COMPRESSION_ERROR, f"header block: {exc!r}") from exc

    def _on_header_block(self, sid: int, block: bytes, end_stream: bool) -> None:
        """A complete header block: a new request, trailers, or a frame to refuse or ignore."""
        headers = self._decode(block)  # always: the HPACK table must stay in step
        if sid > self._highest:
            if not sid & 1:
                raise _ConnectionError(PROTOCOL_ERROR, f"even stream id {sid} from a client")
            self._highest = sid
            skip = self._skip
            if skip is not None and sid in skip:
                self._ignore(sid)  # opened and reset within one read: never reaches a handler
                return
            if self._goaway_last is not None and sid > self._goaway_last:
                self._refused(sid)
                return
            if len(self._streams) >= self._limits.max_concurrent_streams:
                self._refused(sid)
                return
            self._open(sid, headers, end_stream)
            return
        stream = self._streams.get(sid)
        if stream is None:
            if sid in self._ignored:
                return
            raise _ConnectionError(PROTOCOL_ERROR, f"HEADERS on closed or lower stream {sid}")
        if stream.remote_ended:
            self._kill(stream, STREAM_CLOSED)
            return
        if (
            not end_stream
            or not valid_trailers(headers)
            or 0 <= stream._expected != stream._received
        ):
            self._malformed(stream)  # trailers end the stream, without pseudo-headers
            return
        stream._eos = True
        handler = stream.handler
        if handler is not None:
            try:
                handler.trailers(headers)
            except Exception:
                self._handler_failed(stream)
                return
        if stream.stream_id in self._streams and not stream.remote_ended:
            self._end_stream(stream)

    def _on_data(self, flags: int, sid: int, payload: bytes, stream: ServerStream | None) -> None:
        size = len(payload)  # flow-controlled length, padding included
        if not sid:
            raise _ConnectionError(PROTOCOL_ERROR, "DATA on stream 0")
        self._recv_window -= size
        if self._recv_window < 0:
            raise _ConnectionError(FLOW_CONTROL_ERROR, "DATA beyond the connection window")
        self._credit_connection(size)
        data = _unpad(payload) if flags & _PADDED else payload
        if stream is None:
            if sid > self._highest:
                raise _ConnectionError(PROTOCOL_ERROR, f"DATA on idle stream {sid}")
            if sid in self._ignored:
                return
            raise _ConnectionError(STREAM_CLOSED, f"DATA on closed stream {sid}")
        if stream.remote_ended:
            self._kill(stream, STREAM_CLOSED)
            return
        stream._recv_window -= size
        if stream._recv_window < 0:
            raise _ConnectionError(FLOW_CONTROL_ERROR, f"DATA beyond the window of stream {sid}")
        count = len(data)
        padding = size - count
        if padding:
            stream._unacked += padding
        end_stream = flags & _END_STREAM
        if stream._expected >= 0:
            stream._received += count
            if stream._received > stream._expected or (
                end_stream and stream._received != stream._expected
            ):
                self._malformed(stream)  # the body does not match its content-length
                return
        if end_stream:
            stream._eos = True
        if count:
            stream._outstanding += count
            handler = stream.handler
            if handler is not None:
                try:
                    handler.data(data)
                except Exception:
                    self._handler_failed(stream)
                    return
        if end_stream and not stream.remote_ended and sid in self._streams:
            self._end_stream(stream)
        elif padding and stream._unacked >= self._stream_credit_at:
            stream._credit()

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
            if self._blocked:
                self._drain_blocked()
            if self._spent():
                self._recheck_pause()  # streams starved of the connection window
            return
        stream = self._streams.get(sid)
        if stream is None:
            if sid > self._highest:
                raise _ConnectionError(PROTOCOL_ERROR, f"WINDOW_UPDATE on idle stream {sid}")
            return  # closed: the client may not have seen the end yet
        if not increment:
            self._kill(stream, PROTOCOL_ERROR)
            return
        stream._window += increment
        if stream._window > MAX_WINDOW:
            self._kill(stream, FLOW_CONTROL_ERROR)
            return
        try:
            if sid in self._blocked:
                stream._drain()
            elif stream._paused:
                stream._check_pause()  # starved of window, with nothing buffered
        except Exception:
            self._handler_failed(stream)

    def _on_rst_stream(self, sid: int, payload: bytes) -> None:
        if len(payload) != 4:
            raise _ConnectionError(FRAME_SIZE_ERROR, "RST_STREAM of the wrong size")
        if not sid:
            raise _ConnectionError(PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if sid > self._highest:
            raise _ConnectionError(PROTOCOL_ERROR, f"RST_STREAM on idle stream {sid}")
        stream = self._streams.get(sid)
        if stream is not None:
            unfinished = not stream.closed
            handler = stream.handler
            stream.closed = True
            stream.remote_ended = True
            stream._drop_pending()
            self._remove(stream)
            if handler is not None:
                self._notify_reset(handler, _U32.unpack(payload)[0])
            if unfinished and self._reset_meter.hit(self._loop.time()):
                self._flood()
        elif (
            self._skip is not None
            and sid in self._skip
            and self._reset_meter.hit(self._loop.time())
        ):
            self._flood()  # opened and reset within one read: it never reached a handler

    def _on_settings(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise _ConnectionError(PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & _ACK:
            if payload:
                raise _ConnectionError(FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        pairs = _parse_settings(payload)
        self._out += b"\x00\x00\x00\x04\x01\x00\x00\x00\x00"  # ACK
        window_changed = self._apply_settings(pairs)
        if self._settings_meter.hit(self._loop.time()):
            self._flood()
        elif window_changed:
            if self._blocked:
                self._drain_blocked()
            self._recheck_pause()

    def _apply_settings(self, pairs: list[tuple[int, int]]) -> bool:
        """Apply the client's settings; True when its initial stream window changed."""
        changed = False
        for ident, value in pairs:
            if ident == _INITIAL_WINDOW_SIZE:
                delta = value - self._peer_window
                self._peer_window = value
                if delta:
                    changed = True
                    for stream in self._streams.values():
                        stream._window += delta
                        if stream._window > MAX_WINDOW:
                            raise _ConnectionError(FLOW_CONTROL_ERROR, "stream window overflow")
            elif ident == _MAX_FRAME_SIZE:
                self._peer_frame_size = value
        return changed

    def _on_ping(self, flags: int, sid: int, payload: bytes) -> None:
        if sid:
            raise _ConnectionError(PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise _ConnectionError(FRAME_SIZE_ERROR, "PING of the wrong size")
        if flags & _ACK:
            return
        self._out += b"\x00\x00\x08\x06\x01\x00\x00\x00\x00" + payload
        if self._ping_meter.hit(self._loop.time()):
            self._flood()

    # -- streams -------------------------------------------------------------------------------

    def _open(self, sid: int, headers: Headers, ended: bool = False) -> None:
        """A request arrived: validate it, then hand it to a new handler."""
        status, headers = check_request(headers, self._limits.max_header_list_size)
        expected = _content_length(headers)
        if not status and (expected == -2 or (ended and expected > 0)):
            status = MALFORMED
        self._last_accepted = sid
        if status:
            if status == MALFORMED:
                self.malformed_streams += 1
                self._reset(sid, PROTOCOL_ERROR)
            elif status in BAD_HOST_MESSAGES:
                self.malformed_streams += 1
                self._answer_bad_request(sid, BAD_HOST_MESSAGES[status], ended)
            else:
                if status == 431:
                    self.headers_too_large += 1
                self._answer(sid, status, ended)
            return
        stream = ServerStream(self, sid)
        stream.bodiless = ended
        stream._eos = ended
        stream._expected = expected
        self._streams[sid] = stream
        try:
            handler = self._factory(stream, headers)
        except Exception:
            log.exception("HTTP/2 handler factory failed (stream %d from %s)", sid, self.client_ip)
            stream.reset(INTERNAL_ERROR)
            return
        stream.handler = handler
        if (
            stream._pending is not None
            or self._transport_paused
            or ((stream._window <= 0 or self._window <= 0) and self._spent())
        ):
            try:
                stream._check_pause()
            except Exception:
                self._handler_failed(stream)
                return
        if ended and not stream.remote_ended and sid in self._streams:
            self._end_stream(stream)

    def _end_stream(self, stream: ServerStream) -> None:
        """The client's END_STREAM: tell the handler; the stream goes once both sides ended."""
        stream.remote_ended = True
        handler = stream.handler
        if handler is not None:
            try:
                handler.end()
            except Exception:
                self._handler_failed(stream)
                return
        if stream.closed:
            self._remove(stream)

    def _refused(self, sid: int) -> None:
        self.streams_refused += 1
        self._reset(sid, REFUSED_STREAM)
        if self._refusal_meter.hit(self._loop.time()):
            self._flood()

    def _answer(self, sid: int, status: int, ended: bool) -> None:
        """Answer a request the engine handles itself with an empty response."""
        self._send_block(sid, [(b":status", STATUS_BYTES[status]), (b"content-length", b"0")], True)
        if not ended:
            self._reset(sid, NO_ERROR)  # the client may still be sending: stop it
        self._dirty()

    def _answer_bad_request(self, sid: int, message: bytes, ended: bool) -> None:
        """A 400 whose body names the problem, through a stream without a handler (so the body
        waits for the client's window like any other); the stream then closes."""
        stream = ServerStream(self, sid)
        stream.bodiless = stream._eos = ended
        self._streams[sid] = stream
        body = message + b"\n"
        fields = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))]
        stream.send_headers(400, fields)
        stream.send_data(body, end_stream=True)
        if ended and sid in self._streams:
            stream.remote_ended = True
            if stream.closed:
                self._remove(stream)

    def _malformed(self, stream: ServerStream) -> None:
        self.malformed_streams += 1
        self._kill(stream, PROTOCOL_ERROR)

    def _kill(self, stream: ServerStream, error_code: int) -> None:
        """Reset a stream the engine gave up on and tell its handler."""
        handler = stream.handler
        stream.closed = True
        stream.remote_ended = True
        stream._drop_pending()
        self._reset(stream.stream_id, error_code)
        self._remove(stream)
        if handler is not None:
            self._notify_reset(handler, error_code)

    def _handler_failed(self, stream: ServerStream | None) -> None:
        log.exception("HTTP/2 stream handling failed (client %s)", self.client_ip)
        if stream is not None and stream.stream_id in self._streams:
            self._kill(stream, INTERNAL_ERROR)
        elif stream is None:
            self._fail(INTERNAL_ERROR)

    def _notify_reset(self, handler: StreamHandler, error_code: int) -> None:
        try:
            handler.reset(error_code)
        except Exception:
            log.exception("HTTP/2 handler reset() failed (client %s)", self.client_ip)

    def _ignore(self, sid: int) -> None:
        ignored = self._ignored
        ignored[sid] = None
        if len(ignored) > _IGNORED_KEPT:
            del ignored[next(iter(ignored))]

    # -- flow control --------------------------------------------------------------------------

    def _credit_connection(self, size: int) -> None:
        self._conn_credit += size
        if self._conn_credit >= self._conn_credit_at:
            increment, self._conn_credit = self._conn_credit, 0
            self._recv_window += increment
            self._out += _window_frame(0, increment)

    def _drain_blocked(self) -> None:
        # Round robin: each blocked stream moves behind the others once it had its turn.
        for stream in list(self._blocked.values()):
            if self._window <= 0:
                return
            self._blocked.pop(stream.stream_id, None)
            try:
                stream._drain()
            except Exception:
                self._handler_failed(stream)

    def _spent(self) -> bool:
        """True while the connection's or the process's buffer budget is spent."""
        budget = self._budget
        return self._buffered >= self._limits.connection_buffer or (
            budget is not None and budget.spent
        )

    def _held(self, size: int) -> None:
        """``size`` more response bytes wait for the client's window (fewer when negative).

        Crossing a budget (the connection's, or the process's) either way re-checks every
        stream of this connection: streams with no window pause before their upstream sends
        them anything more, and resume once there is room again. Other connections' streams
        pause at their next write while the process's budget is spent, and are woken when it
        has room (``_wait_for_budget``)."""
        was = self._spent()
        self._buffered += size
        if self._budget is not None:
            self._budget.change(size)
        if was != self._spent() and not self._dead:
            self._recheck_pause()

    def _wait_for_budget(self) -> None:
        """A stream paused: if the process's budget is spent, re-check when it has room."""
        budget = self._budget
        if budget is not None and budget.spent:
            budget.wait(self, self._recheck_pause)

    def _recheck_pause(self) -> None:
        if self._dead:
            return
        for stream in list(self._streams.values()):
            try:
                stream._check_pause()
            except Exception:
                self._handler_failed(stream)

    # -- output --------------------------------------------------------------------------------

    def _send_block(self, sid: int, headers: Headers, end_stream: bool) -> None:
        """A HEADERS frame (and CONTINUATION frames when the block is larger than a frame)."""
        header_block_frames(
            self._out, self._encoder.encode(headers), sid, end_stream, self._peer_frame_size
        )

    def _start(self) -> None:
        """Our SETTINGS and the connection window opened beyond the default."""
        limits = self._limits
        settings = b"".join(
            _SETTING.pack(ident, value)
            for ident, value in (
                (_MAX_CONCURRENT_STREAMS, limits.max_concurrent_streams),
                (_INITIAL_WINDOW_SIZE, limits.initial_window_size),
                (_MAX_HEADER_LIST_SIZE, limits.max_header_list_size),
                (_MAX_FRAME_SIZE, limits.max_frame_size),
            )
        )
        target = min(MAX_WINDOW, max(_CONNECTION_WINDOW, limits.initial_window_size))
        self._recv_window = target
        self._out += _frame(_SETTINGS, 0, 0, settings) + _window_frame(0, target - _DEFAULT_WINDOW)

    def _dirty(self) -> None:
        """Output is waiting: flush at the end of this read, or once later in this iteration."""
        if self._in_receive or self._flush_scheduled or self._dead:
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        out = self._out
        if out and not self._dead:
            self._out = bytearray()
            self.activity += 1
            self.transport.write(out)

    def _reset(self, sid: int, error_code: int) -> None:
        self._out += _rst_frame(sid, error_code)
        self._ignore(sid)
        self._dirty()

    def _remove(self, stream: ServerStream) -> None:
        sid = stream.stream_id
        if self._streams.pop(sid, None) is None:
            return
        self._blocked.pop(sid, None)
        stream.handler = None
        if self._goaway_last is not None and not self._streams:
            self._close()

    # -- shutdown ------------------------------------------------------------------------------

    def _goaway(self, error_code: int) -> None:
        """Send GOAWAY at once; accepted streams may still finish."""
        last = self._last_accepted
        self._goaway_last = last
        out = self._out
        out += _goaway_frame(last, error_code)
        self._out = bytearray()
        self.activity += 1
        self.transport.write(out)

    def _flood(self) -> None:
        if self._dead:
            return
        self.flood_goaways += 1
        if self._goaway_last is not None:
            self._teardown(abort=True)  # told to calm down (or draining) and still flooding
            return
        self._goaway(ENHANCE_YOUR_CALM)
        if not self._streams:
            self._close()

    def _fail(self, error_code: int) -> None:
        """A connection error: GOAWAY with ``error_code``, then close."""
        if self._dead:
            return
        self.protocol_errors += 1
        self._block = None
        self._out += _goaway_frame(self._last_accepted, error_code)
        self._teardown(abort=False)

    def _close(self) -> None:
        self._teardown(abort=False)

    def _teardown(self, abort: bool) -> None:
        if self._dead:
            return
        if not abort:
            self._flush()
        self._dead = True
        self._drop_streams(CANCEL)
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def _drop_streams(self, error_code: int) -> None:
        streams = list(self._streams.values())
        self._streams.clear()
        self._blocked.clear()
        for stream in streams:
            handler = stream.handler
            stream.handler = None
            stream.closed = True
            stream.remote_ended = True
            stream._drop_pending()
            if handler is not None:
                self._notify_reset(handler, error_code)

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        if not self.client_ip:
            peer = transport.get_extra_info("peername")
            self.client_ip = peer[0] if peer else ""
