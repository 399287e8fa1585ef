"""Sans-IO HBONE: an HTTP/2 engine for CONNECT tunnels; bytes in, typed tunnel events out.

HBONE uses a small corner of HTTP/2 (RFC 9113): CONNECT requests (§8.5), DATA both ways with flow
control, RST_STREAM, SETTINGS, PING and GOAWAY. This engine implements exactly that corner, with
HPACK from the ``hpack`` library. It replaced python-h2, whose general state machines cost most of
the ztunnel's CPU per tunnelled request (see ``python -m bench.hbone``); it also drains gracefully
on GOAWAY (§6.8), which python-h2 does not.
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

import hpack

from mesh.errors import HboneError, HboneProtocolError, Http2Error, StreamClosedError

STREAM_WINDOW = 4 * 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
MAX_FRAME_SIZE = 1024 * 1024
SERVER_MAX_CONCURRENT_STREAMS = 200
CLIENT_MAX_STREAMS = 100
CLIENT_MAX_HEADER_LIST = 16 * 1024
SERVER_MAX_HEADER_LIST = 64 * 1024
DEFAULT_FRAME_SIZE = 16384


@dataclass(frozen=True, slots=True)
class TunnelRequest:
    """Server side: a well-formed CONNECT arrived for ``host:port``."""

    stream_id: int
    host: str
    port: int
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TunnelMalformed:
    """Server side: a request was answered 400 by the protocol layer itself."""

    stream_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class TunnelEstablished:
    """Client side: the peer answered 200; data may flow."""

    stream_id: int
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TunnelRefused:
    """Client side: the peer answered a status other than 200."""

    stream_id: int
    status: int


@dataclass(frozen=True, slots=True)
class Data:
    """Tunnel payload; ``flow_controlled_length`` must be acknowledged once consumed."""

    stream_id: int
    data: bytes
    flow_controlled_length: int


@dataclass(frozen=True, slots=True)
class EndOfStream:
    """The peer half-closed its sending side (FIN)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset the stream; NO_ERROR and CANCEL mean EOF."""

    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class WindowOpened:
    """Send window grew (``stream_id`` 0: the connection window)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class Terminated:
    """GOAWAY received: no new streams; those up to ``last_stream_id`` may finish."""

    error_code: int
    last_stream_id: int


@dataclass(frozen=True, slots=True)
class PingAcked:
    """A PING we sent came back."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class SettingsChanged:
    """The peer's SETTINGS arrived or changed (e.g. MAX_CONCURRENT_STREAMS)."""

    max_concurrent_streams: int


Event = (
    TunnelRequest
    | TunnelMalformed
    | TunnelEstablished
    | TunnelRefused
    | Data
    | EndOfStream
    | StreamReset
    | WindowOpened
    | Terminated
    | PingAcked
    | SettingsChanged
)


def parse_authority(value: str) -> tuple[str, int]:
    """``ip:port`` or ``[v6]:port`` (or ``host:port``) into host and port; else 400."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise HboneProtocolError(f"bad :authority {value!r}: expected host:port")
    port = int(port_text)
    if not 0 < port < 65536:
        raise HboneProtocolError(f"bad :authority {value!r}: port out of range")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise HboneProtocolError(f"bad :authority {value!r}: invalid IPv6 address") from exc
    elif ":" in host:
        raise HboneProtocolError(f"bad :authority {value!r}: IPv6 must be bracketed")
    return host, port


def format_authority(host: str, port: int) -> str:
    """The :authority form of an address (IPv6 bracketed)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def new_traceparent() -> str:
    """A random W3C traceparent, one per outbound connection."""
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-00"


@dataclass(frozen=True, slots=True)
class ConnectHeaders:
    """What an HBONE client says about the connection it carries."""

    client_addr: str
    service_host: str | None = None
    baggage: Mapping[str, str] = field(default_factory=dict)
    traceparent: str = field(default_factory=new_traceparent)

    def render(self, authority: str) -> list[tuple[str, str]]:
        """The CONNECT header block: no :scheme/:path, as RFC 9113 §8.5 requires."""
        forwarded = f'for="{self.client_addr}"'
        if self.service_host:
            forwarded += f";host={self.service_host}"
        headers = [(":method", "CONNECT"), (":authority", authority)]
        items = ",".join(f"{k}={v}" for k, v in self.baggage.items() if v)
        if items:
            headers.append(("baggage", items))
        headers.append(("forwarded", forwarded))
        headers.append(("traceparent", self.traceparent))
        return headers


# ---------------------------------------------------------------- the HTTP/2 engine

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
DEFAULT_WINDOW = 65535
MAX_WINDOW = 2**31 - 1
MAX_STREAM_ID = 2**31 - 1
# Until the peer's SETTINGS arrive (RFC 9113 leaves it unlimited; be conservative).
DEFAULT_PEER_MAX_STREAMS = 100

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY = range(8)
WINDOW_UPDATE, CONTINUATION = 8, 9
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_ENABLE_PUSH = 0x2
SETTINGS_MAX_CONCURRENT_STREAMS = 0x3
SETTINGS_INITIAL_WINDOW_SIZE = 0x4
SETTINGS_MAX_FRAME_SIZE = 0x5
SETTINGS_MAX_HEADER_LIST_SIZE = 0x6

# Connection-specific fields are malformed in HTTP/2 (RFC 9113 §8.2.2).
_CONNECTION_SPECIFIC = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade"}
)
_REQUEST_PSEUDO = frozenset({":method", ":authority", ":scheme", ":path", ":protocol"})

# 24-bit length split as (high byte, low 16 bits), type, flags, stream id (R bit included).
_HEAD = struct.Struct(">BHBBL")
_U32 = struct.Struct(">L")
_U32X2 = struct.Struct(">LL")
_SETTING = struct.Struct(">HL")


class ErrorCode(IntEnum):
    """HTTP/2 error codes (RFC 9113 §7)."""

    NO_ERROR = 0x0
    PROTOCOL_ERROR = 0x1
    INTERNAL_ERROR = 0x2
    FLOW_CONTROL_ERROR = 0x3
    SETTINGS_TIMEOUT = 0x4
    STREAM_CLOSED = 0x5
    FRAME_SIZE_ERROR = 0x6
    REFUSED_STREAM = 0x7
    CANCEL = 0x8
    COMPRESSION_ERROR = 0x9
    CONNECT_ERROR = 0xA
    ENHANCE_YOUR_CALM = 0xB
    INADEQUATE_SECURITY = 0xC
    HTTP_1_1_REQUIRED = 0xD


def _frame(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    n = len(payload)
    return _HEAD.pack(n >> 16, n & 0xFFFF, ftype, flags, stream_id) + payload


def _window_update(stream_id: int, increment: int) -> bytes:
    return _HEAD.pack(0, 4, WINDOW_UPDATE, 0, stream_id) + _U32.pack(increment)


def _rst_stream(stream_id: int, code: int) -> bytes:
    return _HEAD.pack(0, 4, RST_STREAM, 0, stream_id) + _U32.pack(code)


def _settings(values: Sequence[tuple[int, int]]) -> bytes:
    return _frame(SETTINGS, 0, 0, b"".join(_SETTING.pack(k, v) for k, v in values))


def _request_target(headers: Sequence[tuple[str, str]]) -> tuple[str, int, dict[str, str]]:
    """A CONNECT request's host, port and fields; anything else is HboneProtocolError (400)."""
    fields: dict[str, str] = {}
    regular = False
    for name, value in headers:
        if name[:1] == ":":
            if regular:
                raise HboneProtocolError(f"pseudo-header {name} after a regular field")
            if name not in _REQUEST_PSEUDO:
                raise HboneProtocolError(f"unknown pseudo-header {name}")
            if name in fields:
                raise HboneProtocolError(f"pseudo-header {name} repeated")
        else:
            regular = True
            if name != name.lower():
                raise HboneProtocolError(f"field name {name!r} is not lowercase")
            if name in _CONNECTION_SPECIFIC or (name == "te" and value != "trailers"):
                raise HboneProtocolError(f"connection-specific field {name!r}")
        fields[name] = value
    method = fields.get(":method")
    if method != "CONNECT":
        raise HboneProtocolError(f"method {method!r} is not CONNECT")
    for name in (":scheme", ":path", ":protocol"):
        if name in fields:
            raise HboneProtocolError(f"CONNECT must not carry {name} (RFC 9113 §8.5)")
    host, port = parse_authority(fields.get(":authority", ""))
    return host, port, fields


class _Stream:
    __slots__ = (
        "awaiting_response",
        "local_closed",
        "outbound",
        "recv_window",
        "remote_closed",
        "send_window",
    )

    def __init__(self, send_window: int, outbound: bool) -> None:
        self.send_window = send_window
        self.recv_window = STREAM_WINDOW
        self.outbound = outbound
        self.awaiting_response = outbound
        self.local_closed = False
        self.remote_closed = False


class HboneConnection:
    """One HTTP/2 connection carrying HBONE tunnels; bytes in, events and bytes out.

    Errors by the peer that concern one stream reset that stream (and report ``StreamReset``);
    errors that concern the connection raise ``Http2Error`` from ``receive`` after queueing a
    GOAWAY with the matching code, and the caller closes the connection once that is written.
    """

    def __init__(self, client_side: bool) -> None:
        self.client_side = client_side
        self._out: list[bytes] = []
        self._streams: dict[int, _Stream] = {}
        self._encoder = hpack.Encoder()
        self._decoder = hpack.Decoder()
        self._header_limit = CLIENT_MAX_HEADER_LIST if client_side else SERVER_MAX_HEADER_LIST
        self._decoder.max_header_list_size = self._header_limit
        self._own_parity = 1 if client_side else 0  # clients open odd streams
        self._next_stream_id = 1 if client_side else 2
        self._highest_peer_stream = 0
        self._inbound_open = 0
        self._send_window = DEFAULT_WINDOW  # connection-level, towards the peer
        self._recv_window = DEFAULT_WINDOW  # connection-level, from the peer
        self._peer_initial_window = DEFAULT_WINDOW
        self._peer_max_frame = DEFAULT_FRAME_SIZE
        self._peer_max_streams = DEFAULT_PEER_MAX_STREAMS
        self.peer_settings_received = False
        self.goaway_sent = False
        # inbound bytes not yet forming a whole frame: parts, their size, and the size needed
        self._parts: list[bytes] = []
        self._have = 0
        self._need = 0
        self._preface_pending = not client_side
        # a header block split over CONTINUATION frames
        self._block_stream = 0
        self._block_parts: list[bytes] = []
        self._block_size = 0
        self._block_end_stream = False

    # ------------------------------------------------------------ sending

    def initiate(self) -> None:
        """Send the preface and SETTINGS: 4 MiB stream / 16 MiB connection windows, 1 MiB frames."""
        values = [
            (SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW),
            (SETTINGS_MAX_FRAME_SIZE, MAX_FRAME_SIZE),
            (SETTINGS_ENABLE_PUSH, 0),
        ]
        if self.client_side:
            self._out.append(PREFACE)
        else:
            values.append((SETTINGS_MAX_CONCURRENT_STREAMS, SERVER_MAX_CONCURRENT_STREAMS))
        values.append((SETTINGS_MAX_HEADER_LIST_SIZE, self._header_limit))
        self._out.append(_settings(values))
        self._out.append(_window_update(0, CONNECTION_WINDOW - DEFAULT_WINDOW))
        self._recv_window = CONNECTION_WINDOW

    def data_to_send(self) -> bytes:
        """Bytes to write to the transport."""
        out = self._out
        if not out:
            return b""
        self._out = []
        return out[0] if len(out) == 1 else b"".join(out)

    @property
    def peer_max_streams(self) -> int:
        """Streams the peer lets us open concurrently."""
        return self._peer_max_streams

    @property
    def exhausted(self) -> bool:
        """No stream id is left for a new tunnel on this connection."""
        return self._next_stream_id > MAX_STREAM_ID

    def max_send_chunk(self, stream_id: int) -> int:
        """How many bytes may be sent on the stream right now."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            return 0
        return max(0, min(stream.send_window, self._send_window, self._peer_max_frame))

    def open_tunnel(self, authority: str, headers: ConnectHeaders) -> int:
        """Client: send CONNECT for ``authority``; returns the stream id."""
        stream_id = self._next_stream_id
        if stream_id > MAX_STREAM_ID:
            raise HboneError("no stream ids left on this connection")
        self._next_stream_id += 2
        self._streams[stream_id] = _Stream(self._peer_initial_window, outbound=True)
        self._send_headers(stream_id, headers.render(authority), end_stream=False)
        return stream_id

    def accept(self, stream_id: int, extra: Sequence[tuple[str, str]] = ()) -> None:
        """Server: answer 200; data flows from now on."""
        if stream_id in self._streams:
            self._send_headers(stream_id, [(":status", "200"), *extra], end_stream=False)

    def reject(self, stream_id: int, status: int) -> None:
        """Server: answer a non-200 status and end the stream."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            return
        self._send_headers(stream_id, [(":status", str(status))], end_stream=True)
        if not stream.remote_closed:
            # The response is complete; whatever the client still sends is not wanted (§8.1).
            self._out.append(_rst_stream(stream_id, ErrorCode.NO_ERROR))
        self._drop(stream_id)

    def send(self, stream_id: int, data: bytes) -> None:
        """Queue payload that fits the window (check ``max_send_chunk`` first)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            raise StreamClosedError(f"stream {stream_id} is closed for sending")
        n = len(data)
        if n > stream.send_window or n > self._send_window or n > self._peer_max_frame:
            raise HboneError(f"{n} bytes exceed the send window of stream {stream_id}")
        stream.send_window -= n
        self._send_window -= n
        self._out.append(_HEAD.pack(n >> 16, n & 0xFFFF, DATA, 0, stream_id))
        self._out.append(data)

    def end(self, stream_id: int) -> None:
        """Half-close our side (empty DATA with END_STREAM)."""
        stream = self._streams.get(stream_id)
        if stream is None or stream.local_closed:
            return
        stream.local_closed = True
        self._out.append(_HEAD.pack(0, 0, DATA, END_STREAM, stream_id))
        if stream.remote_closed:
            self._drop(stream_id)

    def reset(self, stream_id: int, code: int = ErrorCode.CANCEL) -> None:
        """Abort a stream with RST_STREAM (nothing to do if it is already closed)."""
        if self._drop(stream_id):
            self._out.append(_rst_stream(stream_id, code))

    def ack(self, stream_id: int, length: int) -> None:
        """``length`` received bytes were consumed: reopen the stream and connection windows."""
        if length <= 0:
            return
        self._recv_window += length
        self._out.append(_window_update(0, length))
        stream = self._streams.get(stream_id)
        if stream is not None and not stream.remote_closed:
            stream.recv_window += length
            self._out.append(_window_update(stream_id, length))

    def ping(self, payload: bytes) -> None:
        """Send a keep-alive PING (8 bytes)."""
        self._out.append(_frame(PING, 0, 0, payload))

    def goaway(self, code: int = ErrorCode.NO_ERROR) -> None:
        """Announce that no new streams will be accepted; with NO_ERROR open streams continue."""
        self.goaway_sent = True
        payload = _U32X2.pack(self._highest_peer_stream, code)
        self._out.append(_frame(GOAWAY, 0, 0, payload))

    def _send_headers(
        self, stream_id: int, headers: Sequence[tuple[str, str]], end_stream: bool
    ) -> None:
        block = self._encoder.encode(headers)
        flags = END_STREAM if end_stream else 0
        limit = self._peer_max_frame
        if len(block) <= limit:
            self._out.append(_frame(HEADERS, flags | END_HEADERS, stream_id, block))
            return
        self._out.append(_frame(HEADERS, flags, stream_id, block[:limit]))
        for start in range(limit, len(block), limit):
            last = start + limit >= len(block)
            chunk = block[start : start + limit]
            self._out.append(_frame(CONTINUATION, END_HEADERS if last else 0, stream_id, chunk))

    def _drop(self, stream_id: int) -> bool:
        """Forget a stream; False if it was not open."""
        stream = self._streams.pop(stream_id, None)
        if stream is None:
            return False
        if not stream.outbound:
            self._inbound_open -= 1
        return True

    def _idle(self, stream_id: int) -> bool:
        """Whether ``stream_id`` was never opened (by either side)."""
        if stream_id & 1 == self._own_parity:
            return stream_id >= self._next_stream_id
        return stream_id > self._highest_peer_stream

    def _stream_error(self, stream_id: int, code: int, out: list[Event]) -> None:
        if self._drop(stream_id):
            self._out.append(_rst_stream(stream_id, code))
            out.append(StreamReset(stream_id, code))

    # ------------------------------------------------------------ receiving

    def receive(self, data: bytes) -> list[Event]:
        """Feed transport bytes; returns tunnel events.

        A connection error raises ``Http2Error`` after queueing GOAWAY with its code.
        """
        out: list[Event] = []
        if self._parts:
            self._parts.append(data)
            self._have += len(data)
            if self._have < self._need:
                return out
            data = b"".join(self._parts)
            self._parts = []
        try:
            self._parse(data, out)
        except Http2Error as exc:
            self.goaway(exc.code)
            raise
        return out

    def _parse(self, buf: bytes, out: list[Event]) -> None:
        pos, end = 0, len(buf)
        if self._preface_pending:
            if end < len(PREFACE):
                if not PREFACE.startswith(buf):
                    raise Http2Error(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
                self._stash(buf, len(PREFACE))
                return
            if buf[: len(PREFACE)] != PREFACE:
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, "not an HTTP/2 connection preface")
            pos = len(PREFACE)
            self._preface_pending = False
        unpack = _HEAD.unpack_from
        while end - pos >= 9:
            hi, lo, ftype, flags, stream_id = unpack(buf, pos)
            length = hi << 16 | lo
            if length > MAX_FRAME_SIZE:
                raise Http2Error(
                    ErrorCode.FRAME_SIZE_ERROR, f"{length}-byte frame over MAX_FRAME_SIZE"
                )
            stop = pos + 9 + length
            if stop > end:
                self._stash(buf[pos:], 9 + length)
                return
            payload = buf[pos + 9 : stop]
            pos = stop
            stream_id &= MAX_STREAM_ID
            if self._block_stream and ftype != CONTINUATION:
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, "header block interrupted")
            if ftype == DATA:
                self._on_data(flags, stream_id, payload, out)
            elif not self.peer_settings_received and ftype != SETTINGS:
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, "first frame is not SETTINGS")
            elif ftype == WINDOW_UPDATE:
                self._on_window_update(stream_id, payload, out)
            elif ftype == HEADERS:
                self._on_headers(flags, stream_id, payload, out)
            elif ftype == RST_STREAM:
                self._on_rst_stream(stream_id, payload, out)
            elif ftype == SETTINGS:
                self._on_settings(flags, stream_id, payload, out)
            elif ftype == PING:
                self._on_ping(flags, stream_id, payload, out)
            elif ftype == GOAWAY:
                self._on_goaway(stream_id, payload, out)
            elif ftype == CONTINUATION:
                self._on_continuation(flags, stream_id, payload, out)
            elif ftype == PRIORITY:
                if stream_id == 0:
                    raise Http2Error(ErrorCode.PROTOCOL_ERROR, "PRIORITY on stream 0")
                if length != 5:
                    raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, "PRIORITY is not 5 bytes")
            elif ftype == PUSH_PROMISE:
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, "PUSH_PROMISE with push disabled")
            # unknown frame types are ignored (RFC 9113 §4.1)
        if pos < end:
            rest = buf[pos:]
            self._stash(rest, 9)

    def _stash(self, rest: bytes, need: int) -> None:
        """Keep the start of an incomplete frame until ``need`` bytes are there."""
        self._parts = [rest]
        self._have = len(rest)
        self._need = need

    def _on_data(self, flags: int, stream_id: int, payload: bytes, out: list[Event]) -> None:
        if stream_id == 0:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "DATA on stream 0")
        if not self.peer_settings_received:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "first frame is not SETTINGS")
        flow = len(payload)
        data = payload
        if flags & PADDED:
            if not flow or payload[0] >= flow:
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, "DATA padding exceeds the frame")
            data = payload[1 : flow - payload[0]]
        self._recv_window -= flow
        if self._recv_window < 0:
            raise Http2Error(ErrorCode.FLOW_CONTROL_ERROR, "peer overran the connection window")
        stream = self._streams.get(stream_id)
        if stream is None or stream.remote_closed:
            if stream is None and self._idle(stream_id):
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, f"DATA on idle stream {stream_id}")
            # A stream we reset or finished: frames in flight are dropped, credit returned.
            self.ack(0, flow)
            if stream is not None:
                self._stream_error(stream_id, ErrorCode.STREAM_CLOSED, out)
            return
        stream.recv_window -= flow
        if stream.recv_window < 0:
            self.ack(0, flow)
            self._stream_error(stream_id, ErrorCode.FLOW_CONTROL_ERROR, out)
            return
        if data:
            out.append(Data(stream_id, data, flow))
        elif flow:
            self.ack(stream_id, flow)  # padding only
        if flags & END_STREAM:
            stream.remote_closed = True
            out.append(EndOfStream(stream_id))
            if stream.local_closed:
                self._drop(stream_id)

    def _on_headers(self, flags: int, stream_id: int, payload: bytes, out: list[Event]) -> None:
        if stream_id == 0:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "HEADERS on stream 0")
        start, stop = 0, len(payload)
        if flags & PADDED:
            if not payload:
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, "HEADERS padding exceeds the frame")
            start, stop = 1, stop - payload[0]
        if flags & PRIORITY_FLAG:
            start += 5
        if start > stop:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "HEADERS padding exceeds the frame")
        block = payload[start:stop]
        end_stream = bool(flags & END_STREAM)
        if flags & END_HEADERS:
            self._on_block(stream_id, block, end_stream, out)
            return
        self._block_stream = stream_id
        self._block_parts = [block]
        self._block_size = len(block)
        self._block_end_stream = end_stream

    def _on_continuation(
        self, flags: int, stream_id: int, payload: bytes, out: list[Event]
    ) -> None:
        if stream_id == 0 or stream_id != self._block_stream:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "CONTINUATION without its HEADERS")
        self._block_parts.append(payload)
        self._block_size += len(payload)
        if self._block_size > 2 * self._header_limit:
            raise Http2Error(ErrorCode.ENHANCE_YOUR_CALM, "header block over the size limit")
        if flags & END_HEADERS:
            block = b"".join(self._block_parts)
            self._block_stream = 0
            self._block_parts = []
            self._on_block(stream_id, block, self._block_end_stream, out)

    def _decode(self, block: bytes) -> list[tuple[str, str]]:
        try:
            return [(str(k), str(v)) for k, v in self._decoder.decode(block)]
        except hpack.OversizedHeaderListError as exc:
            raise Http2Error(ErrorCode.ENHANCE_YOUR_CALM, "header list over the limit") from exc
        except (hpack.HPACKError, UnicodeDecodeError) as exc:
            raise Http2Error(ErrorCode.COMPRESSION_ERROR, f"bad header block: {exc}") from exc

    def _on_block(self, stream_id: int, block: bytes, end_stream: bool, out: list[Event]) -> None:
        # Decode first, always: the HPACK table is shared by every stream on the connection.
        headers = self._decode(block)
        stream = self._streams.get(stream_id)
        if stream is None:
            if stream_id & 1 != self._own_parity and self._idle(stream_id):
                if self.client_side:
                    raise Http2Error(ErrorCode.PROTOCOL_ERROR, "server opened a stream")
                self._on_request(stream_id, headers, end_stream, out)
            elif self._idle(stream_id):
                raise Http2Error(
                    ErrorCode.PROTOCOL_ERROR, f"HEADERS on stream {stream_id} never opened"
                )
            # else: a stream we already reset or finished; its late frames are dropped
        elif stream.awaiting_response:
            self._on_response(stream_id, stream, headers, end_stream, out)
        elif not end_stream:
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, out)  # trailers must end it
        elif not stream.remote_closed:
            stream.remote_closed = True
            out.append(EndOfStream(stream_id))
            if stream.local_closed:
                self._drop(stream_id)

    def _on_request(
        self, stream_id: int, headers: list[tuple[str, str]], end_stream: bool, out: list[Event]
    ) -> None:
        self._highest_peer_stream = stream_id
        if self.goaway_sent or self._inbound_open >= SERVER_MAX_CONCURRENT_STREAMS:
            self._out.append(_rst_stream(stream_id, ErrorCode.REFUSED_STREAM))
            return
        stream = _Stream(self._peer_initial_window, outbound=False)
        stream.remote_closed = end_stream
        self._streams[stream_id] = stream
        self._inbound_open += 1
        try:
            host, port, fields = _request_target(headers)
        except HboneProtocolError as exc:
            self.reject(stream_id, exc.status)
            out.append(TunnelMalformed(stream_id, str(exc)))
            return
        out.append(TunnelRequest(stream_id, host, port, fields))
        if end_stream:
            out.append(EndOfStream(stream_id))

    def _on_response(
        self,
        stream_id: int,
        stream: _Stream,
        headers: list[tuple[str, str]],
        end_stream: bool,
        out: list[Event],
    ) -> None:
        fields = dict(headers)
        status_text = fields.get(":status", "")
        if not (len(status_text) == 3 and status_text.isdigit()):
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, out)
            out.append(TunnelRefused(stream_id, 502))
            return
        status = int(status_text)
        if 100 <= status < 200:
            if end_stream:
                self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, out)
            return  # informational: the final answer follows
        stream.awaiting_response = False
        if status != 200:
            if end_stream:
                self._drop(stream_id)
            else:
                self.reset(stream_id)
            out.append(TunnelRefused(stream_id, status))
            return
        out.append(TunnelEstablished(stream_id, fields))
        if end_stream:
            stream.remote_closed = True
            out.append(EndOfStream(stream_id))
            if stream.local_closed:
                self._drop(stream_id)

    def _on_rst_stream(self, stream_id: int, payload: bytes, out: list[Event]) -> None:
        if stream_id == 0:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "RST_STREAM on stream 0")
        if len(payload) != 4:
            raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, "RST_STREAM is not 4 bytes")
        if self._idle(stream_id):
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, f"RST_STREAM on idle stream {stream_id}")
        if self._drop(stream_id):
            out.append(StreamReset(stream_id, _U32.unpack(payload)[0]))

    def _on_settings(self, flags: int, stream_id: int, payload: bytes, out: list[Event]) -> None:
        if stream_id:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "SETTINGS on a stream")
        if flags & ACK:
            if payload:
                raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS ACK with a payload")
            return
        if len(payload) % 6:
            raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, "SETTINGS length not a multiple of 6")
        self.peer_settings_received = True
        for offset in range(0, len(payload), 6):
            ident, value = _SETTING.unpack_from(payload, offset)
            if ident == SETTINGS_INITIAL_WINDOW_SIZE:
                if value > MAX_WINDOW:
                    raise Http2Error(ErrorCode.FLOW_CONTROL_ERROR, "INITIAL_WINDOW_SIZE too big")
                delta = value - self._peer_initial_window
                self._peer_initial_window = value
                for stream in self._streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise Http2Error(ErrorCode.FLOW_CONTROL_ERROR, "stream window overflow")
            elif ident == SETTINGS_MAX_FRAME_SIZE:
                if not DEFAULT_FRAME_SIZE <= value <= 0xFFFFFF:
                    raise Http2Error(ErrorCode.PROTOCOL_ERROR, f"MAX_FRAME_SIZE {value} invalid")
                self._peer_max_frame = value
            elif ident == SETTINGS_MAX_CONCURRENT_STREAMS:
                self._peer_max_streams = value
            elif ident == SETTINGS_HEADER_TABLE_SIZE:
                self._encoder.header_table_size = value
            elif ident == SETTINGS_ENABLE_PUSH and value > 1:
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, f"ENABLE_PUSH {value} invalid")
        self._out.append(_HEAD.pack(0, 0, SETTINGS, ACK, 0))
        out.append(SettingsChanged(self._peer_max_streams))
        out.append(WindowOpened(0))

    def _on_window_update(self, stream_id: int, payload: bytes, out: list[Event]) -> None:
        if len(payload) != 4:
            raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, "WINDOW_UPDATE is not 4 bytes")
        increment = _U32.unpack(payload)[0] & MAX_WINDOW
        if stream_id == 0:
            if not increment:
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, "WINDOW_UPDATE of 0")
            self._send_window += increment
            if self._send_window > MAX_WINDOW:
                raise Http2Error(ErrorCode.FLOW_CONTROL_ERROR, "connection window overflow")
            out.append(WindowOpened(0))
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            if self._idle(stream_id):
                raise Http2Error(ErrorCode.PROTOCOL_ERROR, f"WINDOW_UPDATE on idle {stream_id}")
            return
        if not increment:
            self._stream_error(stream_id, ErrorCode.PROTOCOL_ERROR, out)
            return
        stream.send_window += increment
        if stream.send_window > MAX_WINDOW:
            self._stream_error(stream_id, ErrorCode.FLOW_CONTROL_ERROR, out)
            return
        out.append(WindowOpened(stream_id))

    def _on_ping(self, flags: int, stream_id: int, payload: bytes, out: list[Event]) -> None:
        if stream_id:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "PING on a stream")
        if len(payload) != 8:
            raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, "PING is not 8 bytes")
        if flags & ACK:
            out.append(PingAcked(payload))
        else:
            self._out.append(_frame(PING, ACK, 0, payload))

    def _on_goaway(self, stream_id: int, payload: bytes, out: list[Event]) -> None:
        if stream_id:
            raise Http2Error(ErrorCode.PROTOCOL_ERROR, "GOAWAY on a stream")
        if len(payload) < 8:
            raise Http2Error(ErrorCode.FRAME_SIZE_ERROR, "GOAWAY shorter than 8 bytes")
        last, code = _U32X2.unpack_from(payload)
        last &= MAX_STREAM_ID
        # Streams we opened above ``last`` were never processed: they may be retried elsewhere.
        for sid in [s for s, st in self._streams.items() if st.outbound and s > last]:
            self._drop(sid)
            out.append(StreamReset(sid, ErrorCode.REFUSED_STREAM))
        out.append(Terminated(code, last))
