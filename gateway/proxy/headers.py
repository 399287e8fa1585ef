"""Header handling on the HTTP/1.1 data path: hop-by-hop names and head serialisation."""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.proxy.exchange import Exchange
    from gateway.request import DirectResponse

# RFC 9110 §7.6.1 connection-specific fields, plus the legacy ones proxies also drop.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Fields the proxy drops from the client's head because it writes its own value.
_REWRITTEN = frozenset({"content-length", "x-forwarded-for", "x-forwarded-proto", "traceparent"})
REQUEST_SKIP = HOP_BY_HOP | _REWRITTEN
# Response fields that never pass through: hop-by-hop (framing is re-derived).
RESPONSE_SKIP = frozenset(name.encode() for name in HOP_BY_HOP)
# Connection tokens that name no header.
_CONNECTION_OPTIONS = frozenset({"close", "keep-alive", "upgrade"})

# A field name is a token; a value has no control character but HTAB (RFC 9110 5.1, 5.5).
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")

REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
_REASON_BYTES: dict[int, bytes] = {code: phrase.encode() for code, phrase in REASONS.items()}


def reason_bytes(status: int) -> bytes:
    """The standard reason phrase of a status code (``Unknown`` for unregistered codes)."""
    return _REASON_BYTES.get(status, b"Unknown")


def check_response_fields(fields: list[tuple[bytes, bytes]]) -> None:
    """Raise RuntimeError naming the first field that is not a token name and a value without
    control characters: fields an in-gateway app made, before any is written."""
    for name, value in fields:
        if not name or _BAD_NAME.search(name) is not None or _BAD_VALUE.search(value) is not None:
            raise RuntimeError(f"invalid response header {name!r}: {value!r}")


# Lower-case response field names known to be tokens (a few names make most responses): look
# a name up here before calling is_token_name.
TOKEN_NAMES: set[bytes] = set()
_TOKEN_NAMES_KEPT = 512


def is_token_name(lower: bytes) -> bool:
    """True when a lower-cased field name is a token (RFC 9110 5.1); remembered in
    :data:`TOKEN_NAMES` (up to a bound: names are the app's to choose)."""
    if lower in TOKEN_NAMES:
        return True
    if not lower or _BAD_NAME.search(lower) is not None:
        return False
    if len(TOKEN_NAMES) < _TOKEN_NAMES_KEPT:
        TOKEN_NAMES.add(lower)
    return True


def connection_tokens(value: str | None) -> frozenset[str]:
    """Header names a Connection header lists (its options such as ``close`` left out)."""
    if not value:
        return frozenset()
    tokens = {t.strip().lower() for t in value.split(",")}
    return frozenset(tokens - _CONNECTION_OPTIONS - {""})


def upstream_request_head(exchange: Exchange) -> bytes:
    """The request head an HTTP/1.1 upstream gets (the same for every try and mirror).

    Hop-by-hop fields (and those the Connection header lists) are dropped; X-Forwarded-For gets
    the client appended, X-Forwarded-Proto and traceparent are set, X-Request-Id is added when
    the client sent none. Host and the query string pass unchanged; the framing is the
    exchange's (Content-Length, chunked, or a WebSocket upgrade).

    ``exchange.forward``, when set, holds the ``"name: value\r\n"`` lines of the head's fields
    that pass as they are, already filtered the same way, plus a ``host`` line made from the
    authority when the client sent no Host (the connection builds them while parsing); it is
    only valid while no filter or stage edited the head and the Connection header listed no field.
    """
    head = exchange.head
    extra_hop = exchange.extra_hop
    forward = exchange.forward
    chunked = exchange.chunked
    content_length = exchange.content_length
    query = head.query
    target = f"{head.path}?{query}" if query else head.path
    if forward is None:
        forward = []
        append = forward.append
        has_host = False
        for name, value in head.headers:
            lower = name.lower()
            if lower in REQUEST_SKIP or lower in extra_hop:
                continue
            if lower == "host":
                has_host = True
            append(f"{name}: {value}\r\n")
        if not has_host and head.authority:
            append(f"host: {head.authority}\r\n")
    if chunked:
        framing = "transfer-encoding: chunked\r\n"
    elif content_length is not None:
        framing = f"content-length: {content_length}\r\n"
    else:
        framing = ""
    if exchange.tunnel is not None:
        framing += "connection: upgrade\r\nupgrade: websocket\r\n"
    rid = f"x-request-id: {exchange.request_id}\r\n" if exchange.new_request_id else ""
    return (
        f"{head.method} {target} HTTP/1.1\r\n{''.join(forward)}"
        f"x-forwarded-for: {exchange.forwarded_for}\r\nx-forwarded-proto: {head.scheme}\r\n"
        f"{rid}traceparent: {exchange.trace.traceparent}\r\n{framing}\r\n"
    ).encode("latin-1", "replace")


def upstream_request_fields(exchange: Exchange) -> list[tuple[bytes, bytes]]:
    """The request's header block for an HTTP/2 upstream: pseudo-headers, then fields.

    The same fields as :func:`upstream_request_head` sends, lower-cased as HTTP/2 requires:
    Host becomes ``:authority``, connection-specific fields are dropped except ``te: trailers``
    (gRPC needs it), Cookie fields are kept one per field (RFC 9113 §8.2.3 allows both).
    """
    head = exchange.head
    extra_hop = exchange.extra_hop
    content_length = None if exchange.chunked else exchange.content_length
    query = head.query
    target = f"{head.path}?{query}" if query else head.path
    enc = _latin1
    fields: list[tuple[bytes, bytes]] = [
        (b":method", enc(head.method)),
        (b":scheme", enc(head.scheme)),
        (b":authority", enc(head.authority)),
        (b":path", enc(target)),
    ]
    for name, value in head.headers:
        lower = name.lower()
        if lower in REQUEST_SKIP or lower in extra_hop or lower == "host":
            if lower == "te" and value.strip().lower() == "trailers":
                fields.append((b"te", b"trailers"))
            continue
        fields.append((enc(lower), enc(value)))
    if content_length is not None:
        fields.append((b"content-length", b"%d" % content_length))
    fields += (
        (b"x-forwarded-for", enc(exchange.forwarded_for)),
        (b"x-forwarded-proto", enc(head.scheme)),
        (b"traceparent", enc(exchange.trace.traceparent)),
    )
    if exchange.new_request_id:
        fields.append((b"x-request-id", enc(exchange.request_id)))
    return fields


def _latin1(text: str) -> bytes:
    return text.encode("latin-1", "replace")


def response_head(status: int, reason: str, headers: list[tuple[str, str]]) -> bytes:
    """A response head for the client."""
    lines = [f"HTTP/1.1 {status} {reason}\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    lines.append("\r\n")
    return "".join(lines).encode("latin-1", "replace")


def response_head_bytes(status: int, reason: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """A proxied response head for the client, built from the upstream's bytes as they are."""
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, reason or reason_bytes(status))]
    for name, value in headers:
        lines += (name, b": ", value, b"\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


def direct_response_bytes(response: DirectResponse, *, head_only: bool, close: bool) -> bytes:
    """A complete response the gateway answers itself, framed with Content-Length."""
    headers = [
        (n, v) for n, v in response.headers if n.lower() not in ("content-length", "connection")
    ]
    headers.append(("content-length", str(len(response.body))))
    if close:
        headers.append(("connection", "close"))
    head = response_head(response.status, REASONS.get(response.status, "Unknown"), headers)
    return head if head_only or response.status in (204, 304) else head + response.body
