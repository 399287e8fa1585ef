"""Server-side TLS on memory BIOs over a plain asyncio transport: failed handshakes send alerts.

asyncio's SSL protocol (and uvloop's copy of it) closes the socket without writing what OpenSSL
queued when a handshake fails, so a TLS 1.2 client, or one with an untrusted certificate, sees a
bare EOF or reset instead of the ``protocol_version`` / ``unknown_ca`` alert. This layer runs the
same ``SSLObject`` itself and always flushes before closing. To the application protocol it is
an ordinary transport: ``get_extra_info("ssl_object")`` returns the ``SSLObject``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, cast

log = logging.getLogger(__name__)

# Largest plaintext taken per SSLObject.read call (one TLS record is at most 16 KiB).
READ_SIZE = 256 * 1024


async def accept_forever(
    listener: socket.socket,
    handle: Callable[[socket.socket], Coroutine[Any, Any, None]],
    tasks: set[asyncio.Task[None]],
    what: str,
) -> None:
    """Accept on a non-blocking listening socket until cancelled, running ``handle`` for each
    connection as a task kept in ``tasks``. Accepting by hand (not ``create_server``) lets the
    caller choose the TLS context per connection before a byte is read; an accept error (such as
    running out of descriptors) is logged and retried after 0.1 s."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            sock, _ = await loop.sock_accept(listener)
        except OSError as exc:
            log.warning("%s accept failed: %s", what, exc)
            await asyncio.sleep(0.1)
            continue
        task = loop.create_task(handle(sock))
        tasks.add(task)
        task.add_done_callback(tasks.discard)


class TlsServerLayer(asyncio.Transport, asyncio.Protocol):
    """The protocol of the raw socket transport and the transport of the application protocol."""

    def __init__(
        self,
        context: ssl.SSLContext,
        app: asyncio.Protocol,
        handshake_timeout: float = 10.0,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        super().__init__()
        self._app = app
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        self._raw: asyncio.Transport | None = None
        self._timeout = handshake_timeout
        self._timer: asyncio.TimerHandle | None = None
        self._on_failure = on_failure
        self._app_connected = False
        self._established = False
        self._closing = False
        self.handshake: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # Raw transport -> TLS -> application.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, so no isinstance check.
        self._raw = cast(asyncio.Transport, transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._timeout, self._handshake_timed_out)

    def data_received(self, data: bytes) -> None:
        self._incoming.write(data)
        if not self.handshake.done():
            self._do_handshake()
        if self._app_connected:
            self._read()

    def eof_received(self) -> bool:
        if not self.handshake.done():
            self._fail(ConnectionResetError("peer closed the connection during the TLS handshake"))
        elif self._app_connected:
            self._app.eof_received()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if not self.handshake.done():
            lost = exc or ConnectionResetError("connection lost during the TLS handshake")
            self._report_failure(lost)
        elif self._app_connected:
            self._app_connected = False
            self._app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._app_connected:
            self._app.pause_writing()

    def resume_writing(self) -> None:
        if self._app_connected:
            self._app.resume_writing()

    def _do_handshake(self) -> None:
        try:
            self._ssl.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except ssl.SSLError as exc:
            self._fail(exc)
            return
        self._flush()
        if self._timer is not None:
            self._timer.cancel()
        self.handshake.set_result(None)
        self._established = self._app_connected = True
        self._app.connection_made(self)

    def _handshake_timed_out(self) -> None:
        if not self.handshake.done():
            self._report_failure(TimeoutError("TLS handshake timed out"))
            if self._raw is not None:
                self._raw.abort()

    def _fail(self, exc: BaseException) -> None:
        """Report, then send whatever OpenSSL queued (the alert) and close."""
        self._report_failure(exc)
        self._flush()
        self._closing = True
        if self._raw is not None:
            self._raw.close()

    def _report_failure(self, exc: BaseException) -> None:
        if self.handshake.done():
            return
        if self._timer is not None:
            self._timer.cancel()
        if self._on_failure is not None:
            self._on_failure(exc)
        self.handshake.set_exception(exc)

    def _read(self) -> None:
        chunks: list[bytes] = []
        eof = False
        while True:
            try:
                chunk = self._ssl.read(READ_SIZE)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                eof = True
                break
            except ssl.SSLError as exc:
                log.debug("TLS read failed: %s", exc)
                self.abort()
                return
            if not chunk:
                eof = True
                break
            chunks.append(chunk)
        self._flush()  # post-handshake records such as a KeyUpdate answer
        if chunks:
            self._app.data_received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof and self._app_connected:
            self._app.eof_received()
            self.close()

    def _flush(self) -> None:
        data = self._outgoing.read()
        if data and self._raw is not None and not self._raw.is_closing():
            self._raw.write(data)

    # Application -> TLS -> raw transport.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Encrypt and send (dropped once closing, like asyncio's transports)."""
        if self._closing or self._raw is None:
            return
        view = memoryview(data)
        while view:
            written = self._ssl.write(view)
            view = view[written:]
        self._flush()

    def close(self) -> None:
        """Send close_notify and close the socket after buffered data is written."""
        if self._closing:
            return
        self._closing = True
        if self._established:
            try:
                self._ssl.unwrap()
            except ssl.SSLError:
                pass  # the peer's close_notify is not awaited
            self._flush()
        if self._raw is not None:
            self._raw.close()

    def abort(self) -> None:
        """Close at once, discarding buffered data."""
        self._closing = True
        if self._raw is not None:
            self._raw.abort()

    def is_closing(self) -> bool:
        """Whether close() or abort() was called or the socket is closing."""
        return self._closing or self._raw is None or self._raw.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """``ssl_object`` and ``peercert`` from TLS, the rest from the socket transport."""
        if name == "ssl_object":
            return self._ssl
        if name == "peercert":
            return self._ssl.getpeercert()
        return self._raw.get_extra_info(name, default) if self._raw else default

    def get_write_buffer_size(self) -> int:
        """Bytes buffered in the socket transport."""
        return self._raw.get_write_buffer_size() if self._raw else 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        """Flow-control marks of the socket transport."""
        if self._raw is not None:
            self._raw.set_write_buffer_limits(high, low)

    def can_write_eof(self) -> bool:
        """TLS has no half-close."""
        return False
