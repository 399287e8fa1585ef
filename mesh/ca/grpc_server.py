"""A small unary gRPC server on h2 over TLS where client certificates are optional.

grpcio's Python server can either require a client certificate or not ask for one; istiod's
:15012 asks and verifies one *if given* (bootstrap tokens before a node has a certificate, the
node's certificate afterwards). So the CA serves its two unary calls itself: TLS through
``TlsServerLayer`` (CERT_OPTIONAL, so refused handshakes still send their alert) and h2 framing
of gRPC (length-prefixed messages, ``grpc-status`` trailers).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from mesh.tls_server import TlsServerLayer, accept_forever
from ports import bind_listener

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 10.0
MAX_MESSAGE = 4 * 1024 * 1024


class Status(enum.IntEnum):
    """gRPC status codes (the subset the CA answers with)."""

    OK = 0
    INVALID_ARGUMENT = 3
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAUTHENTICATED = 16


class RpcAbort(Exception):
    """Raised by a handler to end the call with a non-OK status."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class CallContext:
    """What a handler knows about the caller."""

    metadata: Mapping[str, str]
    peer_certificate: bytes | None  # DER leaf, already verified against the CA roots by TLS
    peer: str


Handler = Callable[[bytes, CallContext], Awaitable[bytes]]


class _Call:
    __slots__ = ("body", "headers")

    def __init__(self, headers: dict[str, str]) -> None:
        self.headers = headers
        self.body = bytearray()


def percent_encode(message: str) -> str:
    """grpc-message encoding: bytes outside printable ASCII, and ``%``, become ``%XX``."""
    return "".join(
        chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in message.encode()
    )


class _Connection(asyncio.Protocol):
    """One client connection: h2 events in, unary calls dispatched, responses out."""

    def __init__(self, server: UnaryServer) -> None:
        self.server = server
        config = h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config)
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, _Call] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.peer_certificate: bytes | None = None
        self.peer = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            self.peer_certificate = ssl_object.getpeercert(binary_form=True)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        self.conn.initiate_connection()
        self._flush()
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        for task in self.tasks:
            task.cancel()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("CA: HTTP/2 protocol error from %s: %s", self.peer, exc)
            self._flush()
            self.close()
            return
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived) and ev.stream_id:
                self.calls[ev.stream_id] = _Call({str(k): str(v) for k, v in ev.headers or ()})
            elif isinstance(ev, h2.events.DataReceived) and ev.stream_id in self.calls:
                call = self.calls[ev.stream_id]
                call.body += ev.data or b""
                self.conn.acknowledge_received_data(ev.flow_controlled_length or 0, ev.stream_id)
                if len(call.body) > MAX_MESSAGE + 5:
                    self.calls.pop(ev.stream_id)
                    self._respond(ev.stream_id, Status.RESOURCE_EXHAUSTED, "message too large")
            elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id in self.calls:
                call = self.calls.pop(ev.stream_id)
                task = asyncio.ensure_future(self._dispatch(ev.stream_id, call))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            elif isinstance(ev, h2.events.StreamReset):
                self.calls.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.close()
        self._flush()

    async def _dispatch(self, stream_id: int, call: _Call) -> None:
        headers = call.headers
        handler = self.server.handlers.get(headers.get(":path", ""))
        if headers.get(":method") != "POST" or not headers.get("content-type", "").startswith(
            "application/grpc"
        ):
            self._respond(stream_id, Status.INVALID_ARGUMENT, "expected a gRPC POST")
            return
        if handler is None:
            self._respond(stream_id, Status.UNIMPLEMENTED, f"unknown method {headers[':path']}")
            return
        body = bytes(call.body)
        if len(body) < 5:
            self._respond(stream_id, Status.INVALID_ARGUMENT, "missing request message")
            return
        compressed, length = body[0], struct.unpack("!I", body[1:5])[0]
        if compressed:
            self._respond(stream_id, Status.UNIMPLEMENTED, "compressed messages are not supported")
            return
        if length != len(body) - 5:
            self._respond(stream_id, Status.INVALID_ARGUMENT, "truncated request message")
            return
        metadata = {k: v for k, v in headers.items() if not k.startswith(":")}
        context = CallContext(metadata, self.peer_certificate, self.peer)
        try:
            reply = await handler(body[5:], context)
        except RpcAbort as exc:
            self._respond(stream_id, exc.status, exc.message)
            return
        except Exception:
            log.exception("CA: handler for %s failed", headers[":path"])
            self._respond(stream_id, Status.INTERNAL, "internal error")
            return
        self._respond(stream_id, Status.OK, "", reply)

    def _respond(self, stream_id: int, status: Status, message: str, reply: bytes = b"") -> None:
        if self.transport is None or self.transport.is_closing():
            return
        head = [(":status", "200"), ("content-type", "application/grpc")]
        trailers = [("grpc-status", str(int(status)))]
        if message:
            trailers.append(("grpc-message", percent_encode(message)))
        try:
            if status is not Status.OK:  # trailers-only response
                self.conn.send_headers(stream_id, head + trailers, end_stream=True)
            else:
                self.conn.send_headers(stream_id, head)
                framed = b"\x00" + struct.pack("!I", len(reply)) + reply
                step = self.conn.max_outbound_frame_size
                for offset in range(0, len(framed), step):
                    self.conn.send_data(stream_id, framed[offset : offset + step])
                self.conn.send_headers(stream_id, trailers, end_stream=True)
        except h2.exceptions.ProtocolError as exc:  # stream reset meanwhile, or no window
            log.info("CA: cannot answer stream %d from %s: %s", stream_id, self.peer, exc)
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        """Close the connection."""
        if self.transport is not None:
            self.transport.close()


class UnaryServer:
    """Serves unary gRPC ``handlers`` (by ``/package.Service/Method``) over TLS."""

    def __init__(self, handlers: Mapping[str, Handler], context: ssl.SSLContext) -> None:
        self.handlers = dict(handlers)
        self.context = context
        self.connections: set[_Connection] = set()
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port`` (0 = any free port); returns the bound port."""
        self._listener = bind_listener(host or "0.0.0.0", port, 1024)
        self._listener.setblocking(False)
        self._accepting = asyncio.get_running_loop().create_task(
            accept_forever(self._listener, self._serve, self._handshakes, "CA")
        )
        return int(self._listener.getsockname()[1])

    async def _serve(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        tls = TlsServerLayer(self.context, _Connection(self), HANDSHAKE_TIMEOUT)
        try:
            await loop.connect_accepted_socket(lambda: tls, sock)
            await tls.handshake
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.info("CA: TLS handshake refused: %s", exc)
            sock.close()

    async def stop(self) -> None:
        """Stop accepting and close every connection."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()
        for task in list(self._handshakes):
            task.cancel()
        for conn in list(self.connections):
            conn.close()
