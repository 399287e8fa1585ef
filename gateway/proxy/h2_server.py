"""The reference HTTP/2 server engine, on the ``h2`` library; the gateway runs ``h2_wire``.

``gateway.proxy.h2_wire`` implements the same interface on its own frame layer (``h2`` costs
~90 us of CPU per request by itself; ``python -m bench.h2_core`` measures both). This engine stays
as the reference the engine tests run against too (a differential check of ``h2_wire``), and it
holds the pieces both share: request validation, the stateless HPACK encoder, the decode cache and
the flood meters.

A request stream is handed to a ``StreamHandler`` made by a factory; the handler answers through
its ``ServerStream``. Flow control works per stream in both directions: request bytes are
credited back only when the handler calls ``consumed()`` (the connection window is re-opened on
receipt, so one stalled stream never stalls the others), and response bytes the client has no
window for are buffered per stream, with ``write_paused`` telling the handler to stop producing.

What the engine refuses, and how:

- more streams than ``max_concurrent_streams``: ``RST_STREAM(REFUSED_STREAM)`` for the extra one;
- malformed requests (missing or unknown pseudo-headers, pseudo-headers after regular fields,
  upper-case or invalid names, connection-specific fields, ``te`` other than ``trailers``, CR, LF
  or NUL in a value, a value with surrounding whitespace, an empty or non-origin ``:path``,
  neither ``:authority`` nor ``host``, ``host`` differing from ``:authority``, a bad
  ``content-length``, pseudo-headers in trailers): ``RST_STREAM(PROTOCOL_ERROR)``;
- ``CONNECT`` (well-formed, not supported here): ``405`` on the stream;
- a decoded header list over ``max_header_list_size``: ``431`` on the stream; over twice that
  the HPACK decoder stops and the connection gets ``GOAWAY(ENHANCE_YOUR_CALM)``;
- rapid resets (client ``RST_STREAM`` of unfinished streams, refused streams included), SETTINGS
  and PING floods over their budget per ``flood_window``: ``GOAWAY(ENHANCE_YOUR_CALM)``; streams
  already accepted may finish, then the connection closes; a second flood aborts it;
- any other protocol error ``h2`` detects: ``GOAWAY`` with its error code, then close.

Costs are kept off the hot path: one ``transport.write`` per read (sends made outside a read are
coalesced with one ``call_soon`` per loop iteration), request headers validated in one pass
instead of h2's generator chain, a stateless HPACK encoder, a cache for repeated request header
blocks, and no per-request tasks, timers or logging.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, cast

from h2.config import H2Configuration
from h2.connection import ConnectionInputs, ConnectionState, H2Connection, _decode_headers
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    Event,
    PingReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import (
    DenialOfServiceError,
    FrameTooLargeError,
    H2Error,
    NoSuchStreamError,
    ProtocolError,
    StreamIDTooLowError,
    TooManyStreamsError,
)
from h2.frame_buffer import FrameBuffer
from h2.settings import SettingCodes, Settings
from h2.stream import StreamClosedBy
from hpack import Decoder, Encoder
from hpack.exceptions import HPACKError
from hpack.struct import HeaderTuple
from hpack.table import HeaderTable
from hyperframe.exceptions import HyperframeError
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

__all__ = [
    "PREFACE",
    "H2Limits",
    "H2ServerConnection",
    "HandlerFactory",
    "ServerStream",
    "StreamHandler",
    "is_h2_preface",
]

log = logging.getLogger(__name__)

Headers = list[tuple[bytes, bytes]]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SWITCHING_PROTOCOLS = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
)

NO_ERROR = int(ErrorCodes.NO_ERROR)
PROTOCOL_ERROR = int(ErrorCodes.PROTOCOL_ERROR)
INTERNAL_ERROR = int(ErrorCodes.INTERNAL_ERROR)
REFUSED_STREAM = int(ErrorCodes.REFUSED_STREAM)
CANCEL = int(ErrorCodes.CANCEL)
ENHANCE_YOUR_CALM = int(ErrorCodes.ENHANCE_YOUR_CALM)

# The connection window is re-opened as data arrives (per-stream windows do the backpressure), so
# it only needs to be large enough never to be the bottleneck.
_CONNECTION_WINDOW = 16 * 1024 * 1024
_MAX_WINDOW = 2**31 - 1
# Bytes allowed in a field name (RFC 9113 8.2.1): no controls, space, upper case, DEL, non-ASCII
# or colon; ``name.translate(None, _NAME_BYTES)`` is empty exactly when the name is valid.
_NAME_BYTES = bytes(c for c in range(0x21, 0x7F) if c != 0x3A and not 0x41 <= c <= 0x5A)
_VALUE_CTL = re.compile(rb"[\x00\n\r]")
_WHITESPACE = b" \t"
_CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
# Header-block decode failures inside h2 (the HPACK state is lost: a connection error).
_DECODE_FAILURES = (HPACKError, IndexError, TypeError, UnicodeDecodeError)
_MALFORMED = -1
_STATUS = {code: str(code).encode() for code in range(100, 600)}


def is_h2_preface(data: bytes) -> bool:
    """True when ``data`` starts with the HTTP/2 client preface, or is a non-empty prefix of it."""
    if len(data) >= len(PREFACE):
        return data.startswith(PREFACE)
    return bool(data) and PREFACE.startswith(data)


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Per-connection HTTP/2 limits: advertised SETTINGS, flood budgets and buffering."""

    max_concurrent_streams: int = 128
    initial_window_size: int = 256 * 1024
    max_header_list_size: int = 64 * 1024
    max_frame_size: int = 16384
    reset_flood: int = 200
    settings_flood: int = 100
    ping_flood: int = 100
    flood_window: float = 1.0
    write_high_water: int = 256 * 1024

    def __post_init__(self) -> None:
        if not 16384 <= self.max_frame_size <= 16777215:
            raise ValueError(f"max_frame_size: expected 16384..16777215, got {self.max_frame_size}")
        # Not below the protocol default: our SETTINGS apply at once, and a client may already
        # have sent 65535 bytes of a body before it reads them.
        if not 65535 <= self.initial_window_size <= _MAX_WINDOW:
            raise ValueError(
                f"initial_window_size: expected 65535..{_MAX_WINDOW}, "
                f"got {self.initial_window_size}"
            )
        for name in ("max_concurrent_streams", "max_header_list_size", "write_high_water"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)}")
        if self.flood_window <= 0:
            raise ValueError(f"flood_window: expected seconds > 0, got {self.flood_window}")


class StreamHandler(Protocol):
    """What the engine calls for one request stream (all calls come from the event loop)."""

    def data(self, data: bytes) -> None:
        """Request body bytes; call ``ServerStream.consumed`` once they are passed on."""

    def end(self) -> None:
        """The client ended its side of the stream (after any trailers)."""

    def trailers(self, headers: Headers) -> None:
        """Request trailers; ``end()`` follows."""

    def reset(self, error_code: int) -> None:
        """The client reset the stream, or the connection died: abort the upstream work now."""

    def write_paused(self, paused: bool) -> None:
        """Stop (True) or resume (False) producing response bytes for this stream."""


HandlerFactory = Callable[["ServerStream", Headers], StreamHandler]


class _RefusedStream(Event):
    """A HEADERS frame over MAX_CONCURRENT_STREAMS, answered with RST_STREAM(REFUSED_STREAM)."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


class _MalformedStream(Event):
    """A request h2 found malformed (content-length, trailers without END_STREAM): reset."""

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


def _hpack_int(value: int, prefix_bits: int, flags: int) -> bytes:
    """An HPACK integer (RFC 7541 5.1) with ``flags`` in the bits above the prefix."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes((flags | value,))
    out = bytearray((flags | limit,))
    value -= limit
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


_STATIC_FIELDS: dict[tuple[bytes, bytes], bytes] = {}
_STATIC_NAMES: dict[bytes, int] = {}
for _index, (_name, _value) in enumerate(HeaderTable.STATIC_TABLE, start=1):
    _STATIC_NAMES.setdefault(_name, _index)
    if _value:
        _STATIC_FIELDS.setdefault((_name, _value), _hpack_int(_index, 7, 0x80))
_STRING_LENGTH = tuple(bytes((n,)) for n in range(0x7F))
# Fields a later hop must not put in a compression table either ("never indexed").
_SENSITIVE = frozenset({b"authorization", b"proxy-authorization", b"cookie", b"set-cookie"})


class _StatelessEncoder(Encoder):
    """HPACK encoder that never uses the dynamic table and never Huffman-codes.

    hpack's encoder costs ~10 us for a three-field response; this one ~1 us. Blocks are a little
    larger (repeated fields are not indexed); the first block sets the peer's view of our table
    size to 0, so later SETTINGS_HEADER_TABLE_SIZE changes need no size update."""

    def __init__(self) -> None:
        super().__init__()
        self._names: dict[bytes, bytes] = {}
        self._first = True

    def encode(
        self,
        headers: Iterable[
            HeaderTuple
            | tuple[bytes | str, bytes | str]
            | tuple[bytes | str, bytes | str, bool | None]
        ]
        | dict[bytes | str, bytes | str],
        huffman: bool = True,
    ) -> bytes:
        parts: list[bytes] = []
        if self._first:
            self._first = False
            parts.append(b"\x20")  # dynamic table size update: 0
        names = self._names
        for name, value in cast("Iterable[tuple[bytes, bytes]]", headers):
            field = _STATIC_FIELDS.get((name, value))
            if field is not None:
                parts.append(field)
                continue
            prefix = names.get(name)
            if prefix is None:
                prefix = self._name_prefix(name)
            size = len(value)
            parts.append(prefix)
            parts.append(_STRING_LENGTH[size] if size < 0x7F else _hpack_int(size, 7, 0))
            parts.append(value)
        return b"".join(parts)

    def _name_prefix(self, name: bytes) -> bytes:
        flags = 0x10 if name in _SENSITIVE else 0x00  # never indexed / without indexing
        index = _STATIC_NAMES.get(name)
        if index is not None:
            prefix = _hpack_int(index, 4, flags)
        else:
            size = len(name)
            prefix = bytes((flags,)) + _hpack_int(size, 7, 0) + name
        if len(self._names) < 512:
            self._names[name] = prefix
        return prefix


class _CachingDecoder(Decoder):
    """HPACK decoder that remembers blocks which left the dynamic table unchanged.

    Clients repeating a request send the same block of indexed fields; its meaning only changes
    when the table does, and then the cache is dropped."""

    def __init__(self, max_header_list_size: int) -> None:
        super().__init__(max_header_list_size)
        self._cache: dict[bytes, tuple[HeaderTuple, ...]] = {}

    def decode(self, data: bytes, raw: bool = False) -> Iterable[HeaderTuple]:
        cache = self._cache
        hit = cache.get(data)
        if hit is not None:
            return list(hit)
        table = self.header_table
        entries = table.dynamic_entries
        newest = entries[0] if entries else None
        count = len(entries)
        size = table.maxsize
        headers = list(super().decode(data, raw=raw))
        if (
            raw
            and count == len(entries)
            and size == table.maxsize
            and (entries[0] if entries else None) is newest
        ):
            if len(cache) >= 256:
                cache.clear()
            cache[data] = tuple(headers)
        elif cache:
            cache.clear()
        return headers


class _FrameBuffer(FrameBuffer):
    """h2's frame buffer, but an oversized frame is refused from its header, not after h2 has
    buffered the whole announced length (up to 16 MiB per connection)."""

    def __next__(self) -> Frame:
        data = self._data
        if len(data) >= 9 and int.from_bytes(data[:3], "big") > self.max_frame_size:
            raise FrameTooLargeError(f"frame of {int.from_bytes(data[:3], 'big')} bytes announced")
        return super().__next__()


class _ServerH2(H2Connection):
    """``H2Connection`` tuned for the engine (written against h2 4.x internals).

    Turns two of h2's connection errors into the stream errors RFC 9113 asks for: too many
    streams (REFUSED_STREAM) and malformed messages (PROTOCOL_ERROR); counts open streams from
    the engine's registry instead of scanning every stream on each new one."""

    def __init__(self, config: H2Configuration, accepted: dict[int, ServerStream]) -> None:
        super().__init__(config)
        self.incoming_buffer = _FrameBuffer(server=True)
        self.accepted = accepted
        self.fresh = 0  # streams h2 opened during the current receive_data() call
        self.sweep_at = 0

    @property
    def open_inbound_streams(self) -> int:
        # h2 forgets closed streams only while counting: do that once per ``sweep_at`` streams.
        if len(self.streams) > self.sweep_at:
            self._open_streams(1)
        return len(self.accepted) + self.fresh

    def _receive_headers_frame(self, frame: HeadersFrame) -> tuple[list[Frame], list[Event]]:
        new = frame.stream_id not in self.streams
        try:
            result = super()._receive_headers_frame(frame)
        except TooManyStreamsError:
            return self._refuse(frame)
        except (NoSuchStreamError, StreamIDTooLowError, DenialOfServiceError):
            raise  # h2 decides between stream and connection error, or the HPACK state is lost
        except ProtocolError as exc:
            sid = frame.stream_id
            if (
                sid not in self.streams
                or self.state_machine.state is ConnectionState.CLOSED
                or isinstance(exc.__cause__, _DECODE_FAILURES)
            ):
                raise
            try:
                self.reset_stream(sid, ErrorCodes.PROTOCOL_ERROR)
            except H2Error:
                raise exc from None
            return [], [_MalformedStream(sid)]
        if new:
            self.fresh += 1
        return result

    def _refuse(self, frame: HeadersFrame) -> tuple[list[Frame], list[Event]]:
        sid = frame.stream_id
        # Decode anyway: the HPACK dynamic table must stay in step with the client's.
        _decode_headers(self.decoder, frame.data)
        if sid % 2 == 0:
            raise ProtocolError(f"invalid stream id {sid} from a client")
        if sid <= self.highest_inbound_stream_id:
            raise StreamIDTooLowError(sid, self.highest_inbound_stream_id)
        self.state_machine.process_input(ConnectionInputs.RECV_HEADERS)
        self.highest_inbound_stream_id = sid
        # Later frames on this stream are then treated as frames on a stream we reset.
        self._closed_streams[sid] = StreamClosedBy.SEND_RST_STREAM
        rst = RstStreamFrame(sid)
        rst.error_code = REFUSED_STREAM
        return [rst], [_RefusedStream(sid)]


def _response_block(status: int | None, headers: Headers) -> Headers:
    """Response fields in HTTP/2 form: lower-case names, no connection-specific fields."""
    block: Headers = [] if status is None else [(b":status", _STATUS.get(status) or b"%d" % status)]
    for name, value in headers:
        name = name.lower()
        if name not in _CONNECTION_SPECIFIC:
            block.append((name, value))
    return block


def _check_request(headers: Headers, limit: int) -> tuple[int, Headers]:
    """(0, headers) for a valid request, else (_MALFORMED | 405 | 431, headers).

    Cookie fields split by the client are joined again (RFC 9113 8.2.3)."""
    method = scheme = path = authority = host = None
    size = 0
    regular = False
    cookies = 0
    values: list[bytes] = []
    for name, value in headers:
        size += len(name) + len(value) + 32
        values.append(value)
        if len(value.strip(_WHITESPACE)) != len(value):
            return _MALFORMED, headers
        if name[:1] == b":":
            if regular:
                return _MALFORMED, headers
            if name == b":method" and method is None:
                method = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":authority" and authority is None:
                authority = value
            else:  # unknown (:protocol, :status) or repeated
                return _MALFORMED, headers
            continue
        regular = True
        if not name or name.translate(None, _NAME_BYTES) or name in _CONNECTION_SPECIFIC:
            return _MALFORMED, headers
        if name == b"host":
            if host is not None:
                return _MALFORMED, headers
            host = value
        elif name == b"cookie":
            cookies += 1
        elif name == b"te" and value.lower() != b"trailers":
            return _MALFORMED, headers
    if method is None or _VALUE_CTL.search(b"".join(values)) is not None:
        return _MALFORMED, headers
    if method == b"CONNECT":
        if scheme is not None or path is not None or authority is None:
            return _MALFORMED, headers
        return 405, headers
    if scheme is None or not path or (path[0] != 0x2F and (path != b"*" or method != b"OPTIONS")):
        return _MALFORMED, headers
    if authority is None:
        if host is None:
            return _MALFORMED, headers
    elif host is not None and host != authority:
        return _MALFORMED, headers
    if size > limit:
        return 431, headers
    if cookies > 1:
        crumbs = [value for name, value in headers if name == b"cookie"]
        headers = [h for h in headers if h[0] != b"cookie"]
        headers.append((b"cookie", b"; ".join(crumbs)))
    return 0, headers


def _valid_trailers(headers: Headers) -> bool:
    ctl = _VALUE_CTL.search
    for name, value in headers:
        if (
            not name
            or name.translate(None, _NAME_BYTES)
            or name in _CONNECTION_SPECIFIC
            or ctl(value) is not None
        ):
            return False
    return True


class _FloodMeter:
    """Counts events in fixed windows; ``hit`` is True when a window's budget is exceeded."""

    __slots__ = ("budget", "count", "start", "window")

    def __init__(self, budget: int, window: float) -> None:
        self.budget = budget
        self.window = window
        self.count = 0
        self.start = 0.0

    def hit(self, now: float) -> bool:
        if now - self.start > self.window:
            self.start = now
            self.count = 0
        self.count += 1
        if self.count > self.budget:
            self.count = 0  # a new budget: a second flood after the GOAWAY aborts
            self.start = now
            return True
        return False


class ServerStream:
    """One request stream, as the handler sees it: the response is sent through it.

    Sends after the stream closed (reset, connection gone) are ignored; ``closed`` tells."""

    __slots__ = (
        "_conn",
        "_ending",
        "_headers_sent",
        "_outstanding",
        "_paused",
        "_pending",
        "_trailers",
        "_unacked",
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
        try:
            conn._h2.send_headers(
                self.stream_id, _response_block(status, headers), end_stream=end_stream
            )
        except H2Error:
            self._abandon()
            return
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
            self._ending = end_stream
            self._drain()
            return
        size = len(data)
        if not size and not end_stream:
            return
        conn = self._conn
        h2c = conn._h2
        sid = self.stream_id
        sent = 0
        try:
            window = h2c.local_flow_control_window(sid)
            frame_size = h2c.max_outbound_frame_size
            if size <= window and size <= frame_size:
                h2c.send_data(sid, data, end_stream=end_stream)
                sent = size
            else:
                limit = min(size, window)
                while sent < limit:
                    n = min(frame_size, limit - sent)
                    h2c.send_data(
                        sid, data[sent : sent + n], end_stream=end_stream and sent + n == size
                    )
                    sent += n
        except H2Error:
            self._abandon()
            return
        conn._dirty()
        if sent == size and (sent or window >= 0):
            if end_stream:
                self._sent_end()
            return
        # The rest waits for WINDOW_UPDATE (an empty END_STREAM too, while the window is < 0).
        self._pending = bytearray(memoryview(data)[sent:])
        self._ending = end_stream
        conn._blocked[sid] = self
        self._check_pause()

    def send_trailers(self, headers: Headers) -> None:
        """Send trailers and end the stream (after buffered body bytes)."""
        if self.closed or self._ending:
            return
        if not self._headers_sent:
            raise RuntimeError(f"stream {self.stream_id}: send_headers() before send_trailers()")
        block = _response_block(None, headers)
        if self._pending is not None:
            self._trailers = block
            self._ending = True
            return
        try:
            self._conn._h2.send_headers(self.stream_id, block, end_stream=True)
        except H2Error:
            self._abandon()
            return
        self._conn._dirty()
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
        self._pending = None
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
        conn = self._conn
        if self._unacked >= conn._stream_credit_at:
            self._credit()

    def _credit(self) -> None:
        increment, self._unacked = self._unacked, 0
        conn = self._conn
        try:
            conn._h2.increment_flow_control_window(increment, stream_id=self.stream_id)
        except (H2Error, KeyError):
            return  # the stream is gone: nothing to re-open
        conn._dirty()

    # -- engine side ---------------------------------------------------------------------------

    def _drain(self) -> None:
        """Hand buffered bytes to h2 as far as the windows allow; finish the stream if asked."""
        pending = self._pending
        if pending is None:
            return
        conn = self._conn
        h2c = conn._h2
        sid = self.stream_id
        try:
            window = h2c.local_flow_control_window(sid)
            frame_size = h2c.max_outbound_frame_size
            while pending and window > 0:
                n = min(window, frame_size, len(pending))
                h2c.send_data(sid, bytes(pending[:n]))
                del pending[:n]
                window -= n
            if pending or (window < 0 and self._ending and self._trailers is None):
                conn._blocked[sid] = self
            else:
                self._pending = None
                conn._blocked.pop(sid, None)
                if self._ending:
                    if self._trailers is not None:
                        h2c.send_headers(sid, self._trailers, end_stream=True)
                    else:
                        h2c.send_data(sid, b"", end_stream=True)
        except H2Error:
            self._abandon()
            return
        conn._dirty()
        self._check_pause()
        if self._ending and self._pending is None and not self.closed:
            self._sent_end()

    def _check_pause(self) -> None:
        handler = self.handler
        if handler is None or self.closed:
            return
        conn = self._conn
        if self._paused:
            if self._pending is None and not conn._transport_paused:
                self._paused = False
                handler.write_paused(False)
        elif conn._transport_paused or (
            self._pending is not None and len(self._pending) > conn._limits.write_high_water
        ):
            self._paused = True
            handler.write_paused(True)

    def _sent_end(self) -> None:
        """END_STREAM went to h2: the response is complete."""
        self.closed = True
        self._pending = None
        if self.remote_ended:
            self._conn._remove(self)
            return
        conn = self._conn
        h2s = conn._h2.streams.get(self.stream_id)
        if h2s is not None and not h2s.closed:
            # The client is still sending: ask it to stop, without error (RFC 9113 8.1).
            self.remote_ended = True
            conn._reset(self.stream_id, NO_ERROR)
            conn._remove(self)
        # else END_STREAM from the client is among the events being dispatched: end() follows.

    def _abandon(self) -> None:
        """h2 refused a send on this stream: drop it and tell the handler on the next tick."""
        if self.closed and self.remote_ended:
            return
        handler = self.handler
        self.closed = True
        self.remote_ended = True
        self._pending = None
        conn = self._conn
        conn._reset(self.stream_id, INTERNAL_ERROR)
        conn._remove(self)
        if handler is not None:
            conn._loop.call_soon(conn._notify_reset, handler, INTERNAL_ERROR)


class H2ServerConnection(asyncio.Protocol):
    """An HTTP/2 server connection: streams in, handlers out, limits and floods enforced.

    Counters (plain ints): ``streams_refused`` (REFUSED_STREAM sent), ``flood_goaways``
    (ENHANCE_YOUR_CALM for reset, SETTINGS or PING floods), ``protocol_errors`` (connection
    errors: GOAWAY and close), ``malformed_streams`` (PROTOCOL_ERROR resets),
    ``headers_too_large`` (431 answers). ``activity`` grows with every read and write."""

    __slots__ = (
        "_blocked",
        "_conn_credit",
        "_conn_credit_at",
        "_dead",
        "_factory",
        "_flush_scheduled",
        "_goaway_last",
        "_h2",
        "_in_receive",
        "_last_accepted",
        "_limits",
        "_loop",
        "_on_close",
        "_ping_meter",
        "_reset_meter",
        "_settings_meter",
        "_stream_credit_at",
        "_streams",
        "_transport_paused",
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
    ) -> None:
        limits = limits or H2Limits()
        self._factory = factory
        self._limits = limits
        self._on_close = on_close
        self.client_ip = client_ip
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self._loop: asyncio.AbstractEventLoop = None  # type: ignore[assignment]
        self._streams: dict[int, ServerStream] = {}
        h2c = _ServerH2(
            H2Configuration(
                client_side=False,
                header_encoding=None,
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
                split_outbound_cookies=False,
                # Validated in _check_request (one pass, C-speed checks) as stream errors.
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
            ),
            self._streams,
        )
        h2c.sweep_at = 2 * limits.max_concurrent_streams + 16
        h2c.encoder = _StatelessEncoder()
        h2c.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
                SettingCodes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
                SettingCodes.MAX_FRAME_SIZE: limits.max_frame_size,
            },
        )
        # Effective now, not at the client's SETTINGS ACK: h2 fixes its frame limit per read.
        h2c.max_inbound_frame_size = limits.max_frame_size
        # Lists up to twice the advertised size are decoded and answered 431 on their stream; the
        # decoder stops beyond that (its table is then lost: GOAWAY).
        h2c.decoder = _CachingDecoder(2 * limits.max_header_list_size)
        self._h2 = h2c
        self._blocked: dict[int, ServerStream] = {}  # streams with response bytes awaiting window
        self._conn_credit = 0
        self._conn_credit_at = max(_CONNECTION_WINDOW, limits.initial_window_size) // 4
        self._stream_credit_at = max(1, limits.initial_window_size // 2)
        self._reset_meter = _FloodMeter(limits.reset_flood, limits.flood_window)
        self._settings_meter = _FloodMeter(limits.settings_flood, limits.flood_window)
        self._ping_meter = _FloodMeter(limits.ping_flood, limits.flood_window)
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
        self._h2.initiate_connection()
        self._open_connection_window()
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
        try:
            self._h2.initiate_upgrade_connection(http2_settings)
        except (H2Error, HyperframeError, ValueError) as exc:
            raise ValueError(f"invalid HTTP2-Settings header: {exc}") from exc
        self._attach(transport)
        self.activity += 1
        self.transport.write(SWITCHING_PROTOCOLS)
        self._open_connection_window()
        self._flush()
        transport.set_protocol(self)
        self._in_receive = True
        try:
            self._open(1, headers, True)
            stream = self._streams.get(1)
            if stream is not None:
                self._end_stream(stream)
        finally:
            self._in_receive = False
        self._flush()
        if rest:
            self.data_received(rest)

    def data_received(self, data: bytes) -> None:
        self.activity += 1
        if self._dead:
            return
        h2c = self._h2
        h2c.fresh = 0
        try:
            events = h2c.receive_data(data)
        except H2Error as exc:
            self._fail(getattr(exc, "error_code", PROTOCOL_ERROR))
            return
        except Exception:  # an h2/hpack bug must not reach the event loop
            log.debug("h2 failed on input from %s", self.client_ip, exc_info=True)
            self._fail(PROTOCOL_ERROR)
            return
        if events:
            self._in_receive = True
            try:
                self._dispatch(events)
            finally:
                self._in_receive = False
        self._flush()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._dead = True
        self._drop_streams(CANCEL)
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

    def abort(self) -> None:
        """Close the connection now; handlers of open streams get ``reset(CANCEL)``."""
        self._dead = True
        self._drop_streams(CANCEL)
        if self.transport is not None:
            self.transport.abort()

    # -- events --------------------------------------------------------------------------------

    def _dispatch(self, events: list[Event]) -> None:
        # Streams opened and reset by the client within this read never reach a handler.
        skip: set[int] | None = None
        # Any: events are told apart by their class below, without a runtime cast per event.
        batch: list[Any] = events
        for ev in batch:
            if ev.__class__ is StreamReset:
                if skip is None:
                    skip = set()
                skip.add(ev.stream_id)
        streams = self._streams
        for ev in batch:
            if self._dead:
                return
            cls = ev.__class__
            stream: ServerStream | None = None
            try:
                if cls is DataReceived:
                    size = ev.flow_controlled_length
                    self._credit_connection(size)
                    stream = streams.get(ev.stream_id)
                    if stream is None or stream.remote_ended:
                        continue
                    data = ev.data
                    stream._outstanding += len(data)
                    padding = size - len(data)
                    if padding:
                        stream._unacked += padding
                    if data and stream.handler is not None:
                        stream.handler.data(data)
                elif cls is RequestReceived:
                    sid = ev.stream_id
                    if skip is not None and sid in skip:
                        continue
                    if self._goaway_last is not None and sid > self._goaway_last:
                        self._refused(sid, send=True)
                        continue
                    self._open(sid, ev.headers, ev.stream_ended is not None)
                elif cls is StreamEnded:
                    stream = streams.get(ev.stream_id)
                    if stream is not None and not stream.remote_ended:
                        self._end_stream(stream)
                elif cls is WindowUpdated:
                    sid = ev.stream_id
                    if sid:
                        stream = self._blocked.get(sid)
                        if stream is not None:
                            stream._drain()
                    elif self._blocked:
                        self._drain_blocked()
                elif cls is StreamReset:
                    self._client_reset(ev, skip)
                elif cls is RemoteSettingsChanged:
                    if self._settings_meter.hit(self._loop.time()):
                        self._flood()
                    elif SettingCodes.INITIAL_WINDOW_SIZE in ev.changed_settings:
                        self._drain_blocked()
                elif cls is PingReceived:
                    if self._ping_meter.hit(self._loop.time()):
                        self._flood()
                elif cls is TrailersReceived:
                    stream = streams.get(ev.stream_id)
                    if stream is None or stream.remote_ended:
                        continue
                    trailers = ev.headers
                    if _valid_trailers(trailers):
                        if stream.handler is not None:
                            stream.handler.trailers(trailers)
                    else:
                        self.malformed_streams += 1
                        self._kill(stream, PROTOCOL_ERROR)
                elif cls is _RefusedStream:
                    self._refused(ev.stream_id, send=False)
                elif cls is _MalformedStream:
                    self.malformed_streams += 1
                    stream = streams.get(ev.stream_id)
                    if stream is not None:
                        self._kill(stream, PROTOCOL_ERROR, send=False)
                elif cls is ConnectionTerminated:
                    # h2 sends nothing after the client's GOAWAY: the streams cannot finish.
                    self._teardown(abort=False)
                    return
            except Exception:
                self._handler_failed(stream)

    def _open(self, sid: int, headers: Headers, ended: bool = False) -> None:
        """A request arrived: validate it, then hand it to a new handler."""
        status, headers = _check_request(headers, self._limits.max_header_list_size)
        if status:
            self._last_accepted = sid
            if status == _MALFORMED:
                self.malformed_streams += 1
                self._reset(sid, PROTOCOL_ERROR)
            else:
                if status == 431:
                    self.headers_too_large += 1
                self._answer(sid, status)
            return
        stream = ServerStream(self, sid)
        stream.bodiless = ended
        self._streams[sid] = stream
        self._last_accepted = sid
        try:
            handler = self._factory(stream, headers)
        except Exception:
            log.exception("HTTP/2 handler factory failed (stream %d from %s)", sid, self.client_ip)
            stream.reset(INTERNAL_ERROR)
            return
        stream.handler = handler
        if stream._pending is not None or self._transport_paused:
            stream._check_pause()

    def _end_stream(self, stream: ServerStream) -> None:
        stream.remote_ended = True
        if stream.handler is not None:
            stream.handler.end()
        if stream.closed:
            self._remove(stream)

    def _client_reset(self, ev: StreamReset, skip: set[int] | None) -> None:
        sid = ev.stream_id
        stream = self._streams.get(sid)
        if stream is not None:
            unfinished = not stream.closed
            handler = stream.handler
            stream.closed = True
            stream.remote_ended = True
            stream._pending = None
            self._remove(stream)
            if handler is not None:
                self._notify_reset(handler, int(ev.error_code))
            if unfinished and self._reset_meter.hit(self._loop.time()):
                self._flood()
        elif skip is not None and sid in skip and self._reset_meter.hit(self._loop.time()):
            self._flood()  # opened and reset within one read: it never reached a handler

    def _refused(self, sid: int, send: bool) -> None:
        self.streams_refused += 1
        if send:
            self._reset(sid, REFUSED_STREAM)
        if self._reset_meter.hit(self._loop.time()):
            self._flood()

    def _answer(self, sid: int, status: int) -> None:
        """Answer a request the engine handles itself with an empty response."""
        h2c = self._h2
        try:
            h2c.send_headers(sid, [(b":status", _STATUS[status]), (b"content-length", b"0")], True)
            h2s = h2c.streams.get(sid)
            if h2s is not None and not h2s.closed:
                h2c.reset_stream(sid, NO_ERROR)
        except H2Error:
            return
        self._dirty()

    def _kill(self, stream: ServerStream, error_code: int, send: bool = True) -> None:
        """Reset a stream the engine gave up on and tell its handler."""
        handler = stream.handler
        stream.closed = True
        stream.remote_ended = True
        stream._pending = None
        if send:
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

    # -- flow control --------------------------------------------------------------------------

    def _open_connection_window(self) -> None:
        target = min(_MAX_WINDOW, max(_CONNECTION_WINDOW, self._limits.initial_window_size))
        self._h2.increment_flow_control_window(target - 65535)

    def _credit_connection(self, size: int) -> None:
        self._conn_credit += size
        if self._conn_credit >= self._conn_credit_at:
            increment, self._conn_credit = self._conn_credit, 0
            self._h2.increment_flow_control_window(increment)

    def _drain_blocked(self) -> None:
        # Round robin: each blocked stream moves behind the others once it had its turn.
        for stream in list(self._blocked.values()):
            if self._h2.outbound_flow_control_window <= 0:
                return
            self._blocked.pop(stream.stream_id, None)
            try:
                stream._drain()
            except Exception:
                self._handler_failed(stream)

    def _recheck_pause(self) -> None:
        for stream in list(self._streams.values()):
            try:
                stream._check_pause()
            except Exception:
                self._handler_failed(stream)

    # -- output --------------------------------------------------------------------------------

    def _dirty(self) -> None:
        """h2 has output: flush at the end of this read, or once later in this loop iteration."""
        if self._in_receive or self._flush_scheduled or self._dead:
            return
        self._flush_scheduled = True
        self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_scheduled = False
        self._flush()

    def _flush(self) -> None:
        data = self._h2.data_to_send()
        if data and not self._dead:
            self.activity += 1
            self.transport.write(data)

    def _reset(self, sid: int, error_code: int) -> None:
        try:
            self._h2.reset_stream(sid, error_code)
        except H2Error:
            return  # already closed in h2: nothing to send
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
        """Send GOAWAY without closing h2's state machine, so accepted streams can finish."""
        last = self._last_accepted
        self._goaway_last = last
        frame = GoAwayFrame(0, error_code=error_code, last_stream_id=last)
        self.activity += 1
        self.transport.write(self._h2.data_to_send() + frame.serialize())

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
        """A connection error: GOAWAY with ``error_code`` (h2 may have queued it), then close."""
        self.protocol_errors += 1
        if self._h2.state_machine.state is not ConnectionState.CLOSED:
            try:
                self._h2.close_connection(error_code=error_code)
            except H2Error:
                pass
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
            stream._pending = None
            if handler is not None:
                self._notify_reset(handler, error_code)

    def _attach(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self._loop = asyncio.get_running_loop()
        if not self.client_ip:
            peer = transport.get_extra_info("peername")
            self.client_ip = peer[0] if peer else ""
