"""Splice a TCP socket to an HBONE tunnel (or to another socket) at the asyncio protocol level.

Bytes go from one side's ``data_received`` straight into the other side's transport or HTTP/2
stream: no StreamReader/StreamWriter and no task per connection. Backpressure works both ways
without buffering beyond the transports': a full socket write buffer withholds the tunnel's
window credit (or pauses the other socket's reading), and a tunnel without send window (or an
HBONE connection whose TLS write buffer is full) pauses reading from the socket. Directions are
independent, so half-close is carried through (FIN <-> END_STREAM).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Protocol

from mesh.errors import StreamClosedError
from mesh.hbone.protocol import ErrorCode
from mesh.hbone.transport import TunnelStream

log = logging.getLogger(__name__)

# How long a refused connection waits for the client to close before it is closed anyway.
LINGER = 5.0


class Peer(Protocol):
    """What a socket side is spliced to: the tunnel, or the other socket of a passthrough."""

    def send(self, data: bytes) -> None:
        """Forward bytes read from the socket side."""

    def send_eof(self) -> None:
        """The socket side read EOF; call its ``read_finished`` once the EOF went out."""

    def pause(self) -> None:
        """The socket side's write buffer is full: stop delivering to it."""

    def resume(self) -> None:
        """The socket side's write buffer drained: deliver again."""

    def close(self) -> None:
        """The socket side is gone: finish (abort unless both directions already ended)."""


class SocketSide(asyncio.Protocol):
    """One TCP socket of a splice; input is held (reading paused) until a peer is attached."""

    __slots__ = (
        "_early",
        "_early_eof",
        "_lost",
        "_read_done",
        "_refused",
        "_write_done",
        "on_lost",
        "on_made",
        "peer",
        "received",
        "sent",
        "transport",
    )

    def __init__(self, on_made: Callable[[SocketSide], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None
        self.received = 0  # bytes read from this socket
        self.sent = 0  # bytes written to this socket
        self.on_made = on_made
        self.on_lost: Callable[[SocketSide], None] | None = None
        self._early = b""  # read before a peer was attached (uvloop starts reading anyway)
        self._early_eof = False
        self._refused = False
        self._read_done = False
        self._write_done = False
        self._lost = False

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.pause()
        if self.on_made is not None:
            on_made, self.on_made = self.on_made, None
            on_made(self)

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.received += len(data)
            self.peer.send(data)
        elif not self._refused:
            self.received += len(data)
            self._early += data
            self.pause()

    def eof_received(self) -> bool:
        if self.peer is not None:
            self.peer.send_eof()
        elif self._refused:
            self.read_finished()
        else:
            self._early_eof = True
        return True  # keep the write side open: the other direction may still be running

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.pause()

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.resume()

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.debug("spliced socket lost: %s", exc)
        self._lost = True
        if self.peer is not None:
            self.peer.close()
        if self.on_lost is not None:
            on_lost, self.on_lost = self.on_lost, None
            on_lost(self)

    # Called by the peer

    def attach(self, peer: Peer) -> None:
        """Start splicing to ``peer``; a socket already gone closes the peer at once."""
        self.peer = peer
        if self._lost:
            peer.close()
            return
        if not self._early_eof:
            self.resume()  # before delivering: the peer may pause us again
        early, self._early = self._early, b""
        if early:
            peer.send(early)
        if self._early_eof:
            peer.send_eof()

    def deliver(self, data: bytes) -> None:
        """Write bytes from the peer to this socket."""
        if self.transport is not None and not self.transport.is_closing():
            self.sent += len(data)
            self.transport.write(data)

    def deliver_eof(self) -> None:
        """The peer ended its direction: shut down our write side (FIN)."""
        self._write_done = True
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.can_write_eof():
            transport.write_eof()
        self._maybe_close()

    def refuse(self) -> None:
        """Setup failed: send FIN and discard input until the client closes (or LINGER passes).

        Closing at once would answer the client's unread bytes with a reset.
        """
        self._refused = True
        self._early = b""
        self._read_done = self._lost or self._early_eof
        self.deliver_eof()
        self.resume()
        if self.transport is not None and not self.transport.is_closing():
            asyncio.get_running_loop().call_later(LINGER, self.close)

    def read_finished(self) -> None:
        """Our EOF reached the peer: this direction is complete."""
        self._read_done = True
        self._maybe_close()

    def pause(self) -> None:
        """Stop reading from the socket."""
        transport = self.transport
        if transport is not None and not transport.is_closing() and transport.is_reading():
            transport.pause_reading()

    def resume(self) -> None:
        """Read from the socket again."""
        transport = self.transport
        if transport is not None and not transport.is_closing() and not transport.is_reading():
            transport.resume_reading()

    def close(self) -> None:
        """Close the socket after its buffered bytes are written."""
        if self.transport is not None:
            self.transport.close()

    def _maybe_close(self) -> None:
        if self._read_done and self._write_done:
            self.close()

    # A socket is also the peer of the other socket in a passthrough.

    def send(self, data: bytes) -> None:
        """Passthrough: bytes read from the other socket."""
        self.deliver(data)

    def send_eof(self) -> None:
        """Passthrough: the other socket read EOF; a FIN is queued at once."""
        self.deliver_eof()
        if isinstance(self.peer, SocketSide):
            self.peer.read_finished()


class TunnelPeer:
    """The HBONE stream side of a splice: the stream's sink and the socket side's peer."""

    __slots__ = ("_blocked", "_closed", "_eof_pending", "_held", "_pending", "side", "stream")

    def __init__(self, stream: TunnelStream, side: SocketSide) -> None:
        self.stream = stream
        self.side = side
        self._pending = b""  # socket bytes waiting for send window
        self._eof_pending = False
        self._blocked = False  # we paused the socket's reading
        self._held = False  # the socket's write buffer is full: withhold window credit
        self._closed = False

    def start(self) -> None:
        """Attach to both sides; anything the tunnel already received is delivered now."""
        self.side.attach(self)
        if not self._closed:
            self.stream.attach(self)

    # TunnelStream sink: called from the HBONE connection's data_received

    def tunnel_data(self, data: bytes, length: int) -> None:
        """Tunnel payload for the socket; credit is returned unless the socket is backed up."""
        self.side.deliver(data)
        self.stream.consumed(length, flush=not self._held)

    def tunnel_eof(self) -> None:
        """The peer sent END_STREAM."""
        self.side.deliver_eof()

    def tunnel_reset(self, code: int) -> None:
        """The stream was reset (or its connection closed)."""
        if code not in (0, ErrorCode.CANCEL) or not self.stream.peer_ended:
            log.debug("tunnel %d reset (code %d)", self.stream.stream_id, code)
        self.side.close()

    def tunnel_writable(self) -> None:
        """Send window opened, or the HBONE connection's write buffer drained."""
        if not self._blocked or self._closed:
            return
        if self._pending:
            data, self._pending = self._pending, b""
            if not self._push(data):
                return
        if self.stream.transport.write_paused:
            self.stream.transport.wait_writable(self.stream)
            return
        if self._eof_pending:
            self._eof_pending = False
            self.stream.end()
            self.side.read_finished()
        self._blocked = False
        self.side.resume()

    # Peer of the socket side

    def send(self, data: bytes) -> None:
        """Bytes read from the socket go out as DATA as far as the window allows."""
        if self._pending:
            self._pending += data
            return
        if not self._push(data):
            self._block()
        elif self.stream.transport.write_paused:
            self._block()
            self.stream.transport.wait_writable(self.stream)

    def send_eof(self) -> None:
        """Socket EOF -> END_STREAM, after any bytes still waiting for window."""
        if self._pending:
            self._eof_pending = True
            return
        self.stream.end()
        self.side.read_finished()

    def pause(self) -> None:
        """The socket is backed up: stop returning window credit."""
        self._held = True

    def resume(self) -> None:
        """The socket drained: return the credit withheld meanwhile."""
        self._held = False
        self.stream.consumed(0, flush=True)

    def close(self) -> None:
        """The socket is gone: reset the stream unless both directions ended; release it."""
        if self._closed:
            return
        self._closed = True
        stream = self.stream
        if stream.reset_code is None and not (stream.closed_locally and stream.peer_ended):
            stream.abort()
        stream.transport.release(stream)

    def _push(self, data: bytes) -> bool:
        """Send what the window allows; keep the rest pending. True when all was sent."""
        stream = self.stream
        conn = stream.transport.conn
        if stream.reset_code is not None or stream.transport.closed:
            return True  # nowhere to send: the reset closes the socket
        view = memoryview(data)
        try:
            while view:
                room = conn.max_send_chunk(stream.stream_id)
                if room <= 0:
                    self._pending = bytes(view)
                    return False
                # Whole payloads that fit the window go out without a copy.
                chunk = data if len(view) == len(data) <= room else bytes(view[:room])
                view = view[len(chunk) :]
                conn.send(stream.stream_id, chunk)
        except StreamClosedError:
            stream.abort()
            return True
        finally:
            stream.transport.flush()
        return True

    def _block(self) -> None:
        self._blocked = True
        self.side.pause()


def splice_tunnel(stream: TunnelStream, side: SocketSide) -> TunnelPeer:
    """Splice an established tunnel to a connected socket side."""
    peer = TunnelPeer(stream, side)
    peer.start()
    return peer


def splice_sockets(a: SocketSide, b: SocketSide) -> None:
    """Splice two connected sockets (passthrough)."""
    a.attach(b)
    b.attach(a)
