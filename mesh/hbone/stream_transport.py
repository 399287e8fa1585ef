"""An HBONE tunnel as an asyncio transport, so an application protocol runs over it unchanged.

A waypoint terminates the CONNECT streams it accepts and parses the HTTP inside; it also sends
its upstream requests through tunnels to the destination node's ztunnel. Both sides are
ordinary asyncio protocols (``connection_made``, ``data_received``, ``eof_received``,
``connection_lost``, ``pause_writing``/``resume_writing``) attached to a :class:`TunnelTransport`.

Flow control maps the asyncio way: window credit is returned as the protocol consumes bytes
(held back while the protocol paused reading), and writes beyond the stream's send window are
buffered here, with ``pause_writing`` above the high-water mark. ``write_eof`` sends END_STREAM
(half-close is carried), ``close`` ends the stream once buffered bytes went out, ``abort``
resets it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from mesh.errors import StreamClosedError
from mesh.hbone.transport import TunnelStream

log = logging.getLogger(__name__)

HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024


class TunnelTransport(asyncio.Transport):
    """The transport of one protocol over one tunnel stream; it is the stream's sink."""

    def __init__(
        self,
        stream: TunnelStream,
        protocol: asyncio.Protocol,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(dict(extra or {}))
        self.stream = stream
        self._protocol = protocol
        self._pending = bytearray()  # written, waiting for send window
        self._eof_wanted = False  # write_eof (or close) called with bytes still pending
        self._close_wanted = False
        self._reading = True
        self._held = 0  # window credit withheld while reading is paused
        self._write_paused = False
        self._lost = False
        self._closing = False
        self._peer_ended = False

    def start(self) -> None:
        """Tell the protocol it is connected, then deliver what the tunnel already holds."""
        self._protocol.connection_made(self)
        if not self._lost:
            self.stream.attach(self)

    # -- TunnelSink ----------------------------------------------------------------------------

    def tunnel_data(self, data: bytes, length: int) -> None:
        """Payload for the protocol; credit goes back unless reading is paused."""
        if self._lost:
            return
        if self._reading:
            self.stream.consumed(length)
        else:
            self._held += length
        self._protocol.data_received(data)

    def tunnel_eof(self) -> None:
        """END_STREAM from the peer: the protocol's ``eof_received`` decides about closing."""
        if self._lost:
            return
        self._peer_ended = True
        if not self._protocol.eof_received():
            self.close()
        elif self.stream.closed_locally:
            self._lose(None)

    def tunnel_reset(self, code: int) -> None:
        """The stream was reset, or its connection went away."""
        self._lose(None if code == 0 or self._peer_ended else ConnectionResetError(code))

    def tunnel_writable(self) -> None:
        """Send window opened, or the HBONE connection's write buffer drained."""
        self._flush()

    # -- asyncio.Transport ---------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Send as much as the window allows now; buffer the rest."""
        if self._closing or self._lost or self._eof_wanted or not data:
            return
        if self._pending:
            self._pending += data
            self._flush()
            return
        stream = self.stream
        transport = stream.transport
        if stream.reset_code is None and not transport.closed:
            try:
                fits = len(data) <= transport.conn.max_send_chunk(stream.stream_id)
                if fits:  # the common case: one DATA frame, no copy into the buffer
                    transport.conn.send(stream.stream_id, bytes(data))
            except StreamClosedError:
                self.abort()
                return
            if fits:
                transport.flush()
                return
        self._pending = bytearray(data)
        self._flush()

    def writelines(self, list_of_data: Any) -> None:
        """Write each chunk in turn."""
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        """END_STREAM once the buffered bytes are sent."""
        self._eof_wanted = True
        self._flush()

    def can_write_eof(self) -> bool:
        """HBONE carries half-close."""
        return True

    def close(self) -> None:
        """End our direction after buffered bytes; the stream is released once both ended."""
        if self._closing or self._lost:
            return
        self._closing = True
        self._close_wanted = True
        self._flush()

    def abort(self) -> None:
        """Reset the stream at once."""
        self._closing = True
        if not self._lost:
            self.stream.abort()
            self._lose(None)

    def is_closing(self) -> bool:
        """Whether close() or abort() was called, or the tunnel is gone."""
        return self._closing or self._lost

    def pause_reading(self) -> None:
        """Withhold window credit: the peer stops once the stream window is used up."""
        self._reading = False

    def resume_reading(self) -> None:
        """Return the credit withheld while paused."""
        if self._reading:
            return
        self._reading = True
        held, self._held = self._held, 0
        if held and not self._lost:
            self.stream.consumed(held)
            self.stream.return_credit()

    def is_reading(self) -> bool:
        """Whether window credit is returned as bytes arrive."""
        return self._reading

    def get_write_buffer_size(self) -> int:
        """Bytes waiting for send window."""
        return len(self._pending)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        """The pause/resume marks of the send buffer."""
        return LOW_WATER, HIGH_WATER

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Fixed marks: the tunnel's window is the real limit."""

    def get_protocol(self) -> asyncio.BaseProtocol:
        """The attached protocol."""
        return self._protocol

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        """Hand the tunnel to another protocol (an HTTP/1.1 connection switching to HTTP/2)."""
        assert isinstance(protocol, asyncio.Protocol)
        self._protocol = protocol

    # -- internals -----------------------------------------------------------------------------

    def _flush(self) -> None:
        stream = self.stream
        transport = stream.transport
        if self._lost:
            return
        if self._pending:
            if stream.reset_code is not None or transport.closed:
                return
            conn = transport.conn
            sent = 0
            size = len(self._pending)
            try:
                while sent < size:
                    room = conn.max_send_chunk(stream.stream_id)
                    if room <= 0:
                        break
                    with memoryview(self._pending) as view:
                        chunk = bytes(view[sent : sent + room])
                    conn.send(stream.stream_id, chunk)
                    sent += len(chunk)
            except StreamClosedError:
                self._pending.clear()
                self.abort()
                return
            finally:
                transport.flush()
            del self._pending[:sent]
            if self._pending or transport.write_paused:
                if transport.write_paused:
                    transport.wait_writable(stream)
                self._check_high()
                return
        if self._write_paused:
            self._write_paused = False
            self._protocol.resume_writing()
        if self._eof_wanted or self._close_wanted:
            stream.end()
            if self._close_wanted or self._peer_ended:
                self._lose(None)

    def _check_high(self) -> None:
        if not self._write_paused and len(self._pending) > HIGH_WATER:
            self._write_paused = True
            self._protocol.pause_writing()

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = True
        self._closing = True
        stream = self.stream
        if stream.reset_code is None and not stream.closed_locally:
            stream.abort()  # our side never ended: the peer must not wait for the rest
        stream.transport.release(stream)
        self._protocol.connection_lost(exc)
