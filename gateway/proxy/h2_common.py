"""What the HTTP/2 engines share: protocol constants, request checks, HPACK coding, limits.

Both engines run on our own frame layer, the server side in :mod:`gateway.proxy.h2_server` and the
h2c client side in :mod:`gateway.proxy.h2_client`; this module holds what they have in common
and what their users need without importing an engine:

- protocol constants: the client ``PREFACE``, the h2c ``SWITCHING_PROTOCOLS`` answer, the error
  codes (RFC 9113 7), the largest flow-control window, the field rules (valid name bytes,
  connection-specific fields, surrounding whitespace, CR/LF/NUL in values) and ``:status`` bytes;
- the server engine's interface: ``H2Limits`` (advertised SETTINGS, flood budgets, buffering),
  the ``StreamHandler`` protocol and ``HandlerFactory``, and ``is_h2_preface`` for listeners that
  sniff prior-knowledge HTTP/2;
- request and response checks: ``check_request`` validates a request header list in one pass
  (``MALFORMED``, ``405`` for CONNECT, ``431`` over the limit; split cookies joined again),
  ``valid_trailers``, ``response_block`` (lower-case names, connection-specific fields dropped);
- HPACK: ``StatelessEncoder`` (no dynamic table, no Huffman coding, credentials never indexed)
  and ``CachingDecoder`` (the ``hpack`` decoder behind a cache of repeated header blocks);
- ``FloodMeter``, the fixed-window counter behind the reset, SETTINGS and PING flood budgets.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from hpack import Decoder, Encoder
from hpack.struct import HeaderTuple
from hpack.table import HeaderTable

if TYPE_CHECKING:
    from gateway.proxy.h2_server import ServerStream

__all__ = [
    "BAD_HOST_MESSAGES",
    "CANCEL",
    "COMPRESSION_ERROR",
    "CONNECTION_SPECIFIC",
    "ENHANCE_YOUR_CALM",
    "FLOW_CONTROL_ERROR",
    "FRAME_SIZE_ERROR",
    "HOST_NOT_AUTHORITY",
    "INTERNAL_ERROR",
    "MALFORMED",
    "MAX_WINDOW",
    "NAME_BYTES",
    "NO_ERROR",
    "PREFACE",
    "PROTOCOL_ERROR",
    "REFUSED_STREAM",
    "STATUS_BYTES",
    "STREAM_CLOSED",
    "SWITCHING_PROTOCOLS",
    "TWO_HOSTS",
    "VALUE_CTL",
    "WHITESPACE",
    "CachingDecoder",
    "FloodMeter",
    "H2Limits",
    "HandlerFactory",
    "Headers",
    "StatelessEncoder",
    "StreamHandler",
    "check_request",
    "is_h2_preface",
    "response_block",
    "valid_trailers",
]

Headers = list[tuple[bytes, bytes]]

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SWITCHING_PROTOCOLS = (
    b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n"
)

# Error codes (RFC 9113 7).
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
ENHANCE_YOUR_CALM = 0xB

# The largest flow-control window (RFC 9113 6.9.1).
MAX_WINDOW = 2**31 - 1

# Bytes allowed in a field name (RFC 9113 8.2.1): no controls, space, upper case, DEL, non-ASCII
# or colon; ``name.translate(None, NAME_BYTES)`` is empty exactly when the name is valid.
NAME_BYTES = bytes(c for c in range(0x21, 0x7F) if c != 0x3A and not 0x41 <= c <= 0x5A)
# What a field value must not contain (RFC 9113 8.2.1), nor start or end with.
VALUE_CTL = re.compile(rb"[\x00\n\r]")
WHITESPACE = b" \t"
# Fields that are HTTP/1.1 connection management, never sent in HTTP/2 (RFC 9113 8.2.2).
CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"proxy-connection", b"keep-alive", b"transfer-encoding", b"upgrade"}
)
# check_request's verdict for a malformed request (a stream error: RST_STREAM(PROTOCOL_ERROR)).
MALFORMED = -1
# Malformed requests answered 400 with a body naming the problem before the stream closes
# (RFC 9113 8.1.1 allows a response first): the Host rules are ones a client can trip over
# without being broken, and deserve a message.
TWO_HOSTS = -2
HOST_NOT_AUTHORITY = -3
BAD_HOST_MESSAGES = {
    TWO_HOSTS: b"more than one host header",
    HOST_NOT_AUTHORITY: b"the host header names another authority than :authority",
}
# ``:status`` values as bytes, for the response heads the engines build.
STATUS_BYTES = {code: str(code).encode() for code in range(100, 600)}


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
    # Streams refused past max_concurrent_streams: our own answer, not the client's reset, so
    # a budget of their own (a client may retry refused streams; thousands a second is a flood).
    refused_flood: int = 1000
    settings_flood: int = 100
    ping_flood: int = 100
    flood_window: float = 1.0
    write_high_water: int = 256 * 1024
    # Response bytes a connection holds beyond its client's windows, all streams together; past
    # it, streams with no window left stop reading their upstreams (as past write_high_water).
    connection_buffer: int = 1024 * 1024

    def __post_init__(self) -> None:
        if not 16384 <= self.max_frame_size <= 16777215:
            raise ValueError(f"max_frame_size: expected 16384..16777215, got {self.max_frame_size}")
        # Not below the protocol default: our SETTINGS apply at once, and a client may already
        # have sent 65535 bytes of a body before it reads them.
        if not 65535 <= self.initial_window_size <= MAX_WINDOW:
            raise ValueError(
                f"initial_window_size: expected 65535..{MAX_WINDOW}, got {self.initial_window_size}"
            )
        for name in (
            "max_concurrent_streams",
            "max_header_list_size",
            "write_high_water",
            "connection_buffer",
        ):
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


class StatelessEncoder(Encoder):
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


class CachingDecoder(Decoder):
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


def response_block(status: int | None, headers: Headers) -> Headers:
    """Response fields in HTTP/2 form: lower-case names, no connection-specific fields."""
    block: Headers = (
        [] if status is None else [(b":status", STATUS_BYTES.get(status) or b"%d" % status)]
    )
    for name, value in headers:
        name = name.lower()
        if name not in CONNECTION_SPECIFIC:
            block.append((name, value))
    return block


def check_request(headers: Headers, limit: int) -> tuple[int, Headers]:
    """(0, headers) for a valid request, else (MALFORMED | TWO_HOSTS | HOST_NOT_AUTHORITY | 405 |
    431, headers).

    Cookie fields split by the client are joined again (RFC 9113 8.2.3)."""
    method = scheme = path = authority = host = None
    size = 0
    regular = False
    cookies = 0
    values: list[bytes] = []
    for name, value in headers:
        size += len(name) + len(value) + 32
        values.append(value)
        if len(value.strip(WHITESPACE)) != len(value):
            return MALFORMED, headers
        if name[:1] == b":":
            if regular:
                return MALFORMED, headers
            if name == b":method" and method is None:
                method = value
            elif name == b":path" and path is None:
                path = value
            elif name == b":scheme" and scheme is None:
                scheme = value
            elif name == b":authority" and authority is None:
                authority = value
            else:  # unknown (:protocol, :status) or repeated
                return MALFORMED, headers
            continue
        regular = True
        if not name or name.translate(None, NAME_BYTES) or name in CONNECTION_SPECIFIC:
            return MALFORMED, headers
        if name == b"host":
            if host is not None:
                return TWO_HOSTS, headers
            host = value
        elif name == b"cookie":
            cookies += 1
        elif name == b"te" and value.lower() != b"trailers":
            return MALFORMED, headers
    if method is None or VALUE_CTL.search(b"".join(values)) is not None:
        return MALFORMED, headers
    if method == b"CONNECT":
        if scheme is not None or path is not None or authority is None:
            return MALFORMED, headers
        return 405, headers
    if scheme is None or not path or (path[0] != 0x2F and (path != b"*" or method != b"OPTIONS")):
        return MALFORMED, headers
    if authority is None:
        if host is None:
            return MALFORMED, headers
    elif host is not None and host != authority and not _same_authority(host, authority, scheme):
        return HOST_NOT_AUTHORITY, headers
    if size > limit:
        return 431, headers
    if cookies > 1:
        crumbs = [value for name, value in headers if name == b"cookie"]
        headers = [h for h in headers if h[0] != b"cookie"]
        headers.append((b"cookie", b"; ".join(crumbs)))
    return 0, headers


def _same_authority(host: bytes, authority: bytes, scheme: bytes) -> bool:
    """True when ``host`` and ``:authority`` name one entity after scheme-based normalization
    (RFC 9113 8.3.1, RFC 3986 6.2.3): case-insensitive, the scheme's default port implied."""
    default = b":443" if scheme == b"https" else b":80"
    a, b = host.lower(), authority.lower()
    if a.endswith(default) or a.endswith(b":"):
        a = a[: a.rfind(b":")]
    if b.endswith(default) or b.endswith(b":"):
        b = b[: b.rfind(b":")]
    return a == b


def valid_trailers(headers: Headers) -> bool:
    ctl = VALUE_CTL.search
    for name, value in headers:
        if (
            not name
            or name.translate(None, NAME_BYTES)
            or name in CONNECTION_SPECIFIC
            or ctl(value) is not None
        ):
            return False
    return True


class FloodMeter:
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
