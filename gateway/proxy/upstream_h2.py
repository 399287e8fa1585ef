"""h2c upstreams on the ``h2`` library: the reference engine; the pool runs ``upstream_wire``.

``gateway.proxy.upstream_wire`` has the same interface on our own frame layer (``h2`` costs
~80-140 us of CPU per request by itself); the upstream tests run against both engines.

An :class:`H2ClientStream` stands in for an ``Http1Connection`` towards its owner: the owner sends
one request through it and hears the response through the same callbacks, plus
``upstream_trailers``. Streams are single-use; the pool hands a fresh one out per request and the
slot frees when the response ends or the stream resets. The :class:`H2ClientConnection` underneath
multiplexes them, keeps within the peer's ``SETTINGS_MAX_CONCURRENT_STREAMS`` and does flow control
both ways so one slow stream never stalls the others.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Protocol, cast

from h2.config import H2Configuration
from h2.connection import ConnectionInputs, ConnectionState, H2Connection, H2ConnectionStateMachine
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    InformationalResponseReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from h2.exceptions import NoAvailableStreamIDError, ProtocolError, TooManyStreamsError
from h2.settings import SettingCodes, Settings
from hpack import NeverIndexedHeaderTuple

from gateway.proxy.upstream import ACTIVE, CLOSED, CONNECTING, IDLE

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint
    from gateway.proxy.pool import H2Group, UpstreamPool

STREAM_WINDOW = 1 << 20  # our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE)
CONNECTION_WINDOW = 16 << 20  # our receive window for the whole connection
STREAM_CAP = 1_000  # streams per connection even when the peer allows more (gRPC sets no limit)
HIGH_WATER = 64 * 1024  # request bytes queued on a stream before its owner is paused
LOW_WATER = 16 * 1024  # ... and resumed
# Received bytes are handed back as window in batches, not one WINDOW_UPDATE per DATA frame.
STREAM_CREDIT_BATCH = STREAM_WINDOW // 4
CONNECTION_CREDIT_BATCH = CONNECTION_WINDOW // 4
_SPEC_INITIAL_WINDOW = 65_535

# Owners hand request heads over in h2 form already, so h2's outbound validation and
# normalisation (six generator passes per field, ~20% of send_headers) are skipped; what they
# did for safety, keeping credentials out of the HPACK table, send_request does. Inbound
# validation stays: response fields end up in HTTP/1.1 heads, where CR/LF must never get through.
_H2_CONFIG = H2Configuration(
    client_side=True,
    header_encoding=None,
    validate_outbound_headers=False,
    normalize_outbound_headers=False,
)
_NEVER_INDEXED = frozenset({b"authorization", b"proxy-authorization"})
_MAX_STREAMS = SettingCodes.MAX_CONCURRENT_STREAMS
_WINDOW_SETTINGS = (SettingCodes.INITIAL_WINDOW_SIZE, SettingCodes.MAX_FRAME_SIZE)


class _PoolHooks(Protocol):
    """The ``UpstreamPool`` calls a connection makes, typed against this module's classes (the
    pool imports the ``upstream_wire`` engine; this one is the reference both are tested on)."""

    def forget(self, conn: H2ClientConnection) -> None: ...

    def h2_capacity(self, conn: H2ClientConnection) -> None: ...

    def h2_idle(self, conn: H2ClientConnection) -> None: ...

    def h2_draining(self, conn: H2ClientConnection) -> None: ...


class StreamOwner(Protocol):
    """What a stream reports to whoever sent its request (``UpstreamOwner`` plus trailers)."""

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


class _DrainingStateMachine(H2ConnectionStateMachine):
    """h2's connection state machine, except that a received GOAWAY spares the streams it spares.

    h2 moves to CLOSED on GOAWAY and then rejects every frame, so the streams at or below the
    GOAWAY's last stream id (which the peer promises to finish) would die with the connection
    (python-hyper/h2#1199). Here they keep receiving, sending body and resetting; new streams
    (SEND_HEADERS) stay refused.
    """

    _transitions = {
        **H2ConnectionStateMachine._transitions,
        **{
            (ConnectionState.CLOSED, event): (None, ConnectionState.CLOSED)
            for event in (
                ConnectionInputs.RECV_HEADERS,
                ConnectionInputs.RECV_DATA,
                ConnectionInputs.RECV_WINDOW_UPDATE,
                ConnectionInputs.RECV_PING,
                ConnectionInputs.RECV_SETTINGS,
                ConnectionInputs.RECV_RST_STREAM,
                ConnectionInputs.RECV_PRIORITY,
                ConnectionInputs.RECV_ALTERNATIVE_SERVICE,
                ConnectionInputs.SEND_DATA,
                ConnectionInputs.SEND_RST_STREAM,
                ConnectionInputs.SEND_WINDOW_UPDATE,
            )
        },
    }


class H2ClientStream:
    """One request/response exchange on an h2c connection, duck-typing ``Http1Connection``.

    States: IDLE (handed out, request not sent), ACTIVE (request sent), CLOSED (response ended,
    reset or aborted). Never ACTIVE when released as reusable, so ``UpstreamPool.release`` always
    ends in :meth:`close`.
    """

    __slots__ = (
        "_end_pending",
        "_in_batch",
        "_local_ended",
        "_pending",
        "_pending_size",
        "_unacked",
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

    # -- used by owners ------------------------------------------------------------------------

    def send_request(self, headers: list[tuple[bytes, bytes]], end_stream: bool) -> None:
        """Open the stream with a HEADERS frame (pseudo-headers first, lower-case names)."""
        if self.state is not IDLE:
            return
        conn = self.connection
        if conn.goaway or conn.state is CLOSED:
            self._refuse()
            return
        h2c = conn.h2
        for name, value in headers:
            # h2's rule (after nghttp2 and Firefox): credentials never enter the compression
            # context another client's requests share.
            if name in _NEVER_INDEXED or (name == b"cookie" and len(value) < 20):
                headers = [_never_indexed(n, v) for n, v in headers]
                break
        try:
            stream_id = h2c.get_next_available_stream_id()
            h2c.send_headers(stream_id, headers, end_stream=end_stream)
        except NoAvailableStreamIDError:
            conn.exhausted()
            self._refuse()
            return
        except TooManyStreamsError:  # the peer lowered its limit after we took the slot
            self._refuse()
            return
        self.stream_id = stream_id
        self.state = ACTIVE
        self._local_ended = end_stream
        conn.streams[stream_id] = self
        conn.dirty()

    def send_data(self, data: bytes, end_stream: bool = False) -> None:
        """Send request body bytes; what the peer's window cannot take yet is queued."""
        if self.state is not ACTIVE or self._local_ended or self._end_pending:
            return
        if not data:
            if end_stream:
                self.end_request()
            return
        conn = self.connection
        if self._pending is None and not conn.write_blocked:
            h2c = conn.h2
            size = len(data)
            stream_id = self.stream_id
            assert stream_id is not None
            if size <= h2c.max_outbound_frame_size and size <= h2c.local_flow_control_window(
                stream_id
            ):
                h2c.send_data(stream_id, data, end_stream=end_stream)
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
        self.connection.h2.end_stream(stream_id)
        self._local_ended = True
        self.connection.dirty()

    def pause_reading(self) -> None:
        """Stop re-opening this stream's receive window: the peer stalls this stream only."""
        self.reading_paused = True

    def resume_reading(self) -> None:
        """Give the stream's withheld window back."""
        if not self.reading_paused:
            return
        self.reading_paused = False
        unacked = self._unacked
        if unacked and self.state is ACTIVE and self.stream_id is not None:
            self._unacked = 0
            try:
                self.connection.h2.increment_flow_control_window(unacked, self.stream_id)
            except ProtocolError:
                return  # the stream closed meanwhile
            self.connection.dirty()

    def abort(self) -> None:
        """Drop the owner and reset the stream (CANCEL) unless it already ended."""
        self.owner = None
        if self.state is CLOSED:
            return
        self.state = CLOSED
        conn = self.connection
        stream_id = self.stream_id
        if stream_id is not None and conn.state is not CLOSED:
            try:
                conn.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
            except ProtocolError:
                pass  # h2 already sees it closed
            else:
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
        h2c = conn.h2
        stream_id = self.stream_id
        assert stream_id is not None
        sent = False
        while pending and not conn.write_blocked:
            room = min(h2c.local_flow_control_window(stream_id), h2c.max_outbound_frame_size)
            if room <= 0:
                break
            chunk = pending[0]
            if len(chunk) <= room:
                pending.popleft()
            else:
                view = chunk if isinstance(chunk, memoryview) else memoryview(chunk)
                chunk, pending[0] = view[:room], view[room:]
            self._pending_size -= len(chunk)
            last = not pending and self._end_pending
            h2c.send_data(stream_id, chunk, end_stream=last)
            sent = True
            if last:
                self._local_ended = True
        if not pending:
            self._pending = None
            conn.blocked.pop(self, None)
            if self._end_pending and not self._local_ended:
                h2c.end_stream(stream_id)
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
            try:
                conn.h2.reset_stream(stream_id, ErrorCodes.CANCEL)
            except ProtocolError:
                pass
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


class H2ClientConnection(asyncio.Protocol):
    """An h2c connection to one endpoint carrying up to the peer's limit of concurrent streams.

    States: CONNECTING (until the peer's SETTINGS arrive: only then is its stream limit known),
    IDLE (no streams), ACTIVE, CLOSED. ``goaway`` marks a connection that takes no new streams.
    """

    __slots__ = (
        "_batch",
        "_credit",
        "_flush_scheduled",
        "_in_batch",
        "blocked",
        "endpoint",
        "goaway",
        "group",
        "h2",
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
        self._batch: list[H2ClientStream] = []  # streams that got events in this read
        self._in_batch = False
        self._flush_scheduled = False
        self._credit = 0  # received bytes not yet given back as connection window
        h2c = H2Connection(_H2_CONFIG)
        h2c.state_machine = _DrainingStateMachine()
        h2c.local_settings = Settings(
            client=True,
            initial_values={
                SettingCodes.ENABLE_PUSH: 0,
                SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                SettingCodes.MAX_HEADER_LIST_SIZE: H2Connection.DEFAULT_MAX_HEADER_LIST_SIZE,
            },
        )
        self.h2 = h2c

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
            try:
                self.h2.close_connection()
                transport.write(self.h2.data_to_send())
            except ProtocolError:
                pass
            transport.close()

    def exhausted(self) -> None:
        """Stream ids ran out: behave as after a GOAWAY."""
        if not self.goaway:
            self.goaway = True
            self.pool.h2_draining(self)

    # -- used by streams -----------------------------------------------------------------------

    def dirty(self) -> None:
        """h2 has bytes to send: write them when the current callback returns (coalesced)."""
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
        self.transport = transport  # type: ignore[assignment]
        h2c = self.h2
        h2c.initiate_connection()
        h2c.increment_flow_control_window(CONNECTION_WINDOW - _SPEC_INITIAL_WINDOW)
        transport.write(h2c.data_to_send())  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        h2c = self.h2
        try:
            events = h2c.receive_data(data)
        except ProtocolError:
            self._fail("bad-response")
            return
        streams = self.streams
        batch = self._batch
        self._in_batch = True
        try:
            for event in events:
                # isinstance on an exact type is one pointer compare in C, and it narrows.
                if isinstance(event, DataReceived):
                    stream_id = event.stream_id
                    size = event.flow_controlled_length
                    stream = streams.get(stream_id)
                    owner = stream.owner if stream is not None else None
                    self._credit += size  # the connection window re-opens whoever reads
                    if owner is None or stream is None:
                        continue
                    if event.data:
                        owner.upstream_body(event.data)
                    stream._unacked += size
                    if not stream._in_batch:
                        stream._in_batch = True
                        batch.append(stream)
                elif isinstance(event, ResponseReceived):
                    stream = streams.get(event.stream_id)
                    if stream is not None and stream.owner is not None:
                        headers = event.headers
                        status, headers = _status_and_fields(headers)
                        stream.owner.upstream_head(stream, status, b"", headers)
                        if not stream._in_batch:
                            stream._in_batch = True
                            batch.append(stream)
                elif isinstance(event, StreamEnded):
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream._complete()
                elif isinstance(event, TrailersReceived):
                    stream = streams.get(event.stream_id)
                    if stream is not None and stream.owner is not None:
                        stream.owner.upstream_trailers(event.headers)
                elif isinstance(event, WindowUpdated):
                    self._window_opened(event.stream_id)
                elif isinstance(event, StreamReset):
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        code = event.error_code
                        stream._lost("refused" if code == ErrorCodes.REFUSED_STREAM else "reset")
                elif isinstance(event, InformationalResponseReceived):
                    stream = streams.get(event.stream_id)
                    if stream is not None and stream.owner is not None:
                        stream.owner.upstream_informational(_status_and_fields(event.headers)[0])
                elif isinstance(event, RemoteSettingsChanged):
                    self._settings_changed(event)
                elif isinstance(event, ConnectionTerminated):
                    self._goaway_received(event.last_stream_id or 0)
            if self._credit >= CONNECTION_CREDIT_BATCH:
                h2c.increment_flow_control_window(self._credit)
                self._credit = 0
            if batch:
                for stream in batch:
                    stream._in_batch = False
                    if (
                        stream._unacked >= STREAM_CREDIT_BATCH
                        and not stream.reading_paused
                        and stream.state is ACTIVE
                    ):
                        h2c.increment_flow_control_window(stream._unacked, stream.stream_id)
                        stream._unacked = 0
                    owner = stream.owner
                    if owner is not None:
                        owner.upstream_flush()
                batch.clear()
        finally:
            self._in_batch = False
        out = h2c.data_to_send()
        transport = self.transport
        if out and transport is not None and self.state is not CLOSED:
            transport.write(out)
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

    # -- internals -----------------------------------------------------------------------------

    def _flush(self) -> None:
        self._flush_scheduled = False
        transport = self.transport
        if transport is not None and self.state is not CLOSED:
            out = self.h2.data_to_send()
            if out:
                transport.write(out)

    def _window_opened(self, stream_id: int) -> None:
        if stream_id:
            stream = self.streams.get(stream_id)
            if stream is not None and stream._pending is not None:
                stream._drain()
        elif self.blocked:
            for stream in list(self.blocked):
                stream._drain()

    def _settings_changed(self, event: RemoteSettingsChanged) -> None:
        changed = event.changed_settings
        before = self.max_streams
        limit = changed.get(_MAX_STREAMS)
        if limit is not None and limit.new_value is not None:
            self.max_streams = min(limit.new_value, STREAM_CAP)
        if any(code in changed for code in _WINDOW_SETTINGS):
            self._window_opened(0)
        if not self.ready.done():
            self.state = IDLE if not self.reserved else ACTIVE
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

    def _fail(self, reason: str) -> None:
        """A connection error: say GOAWAY, drop every stream and the socket."""
        transport = self.transport
        if transport is not None and self.state is not CLOSED:
            out = self.h2.data_to_send()  # h2 queued its GOAWAY
            if out:
                transport.write(out)
        self.state = CLOSED
        if not self.ready.done():
            self.ready.set_exception(
                ConnectionError(f"{self.endpoint} did not speak h2c (HTTP/2 protocol error)")
            )
        for stream in list(self.streams.values()):
            stream._lost(reason)
        if transport is not None:
            transport.abort()


def _never_indexed(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    if name in _NEVER_INDEXED or (name == b"cookie" and len(value) < 20):
        return NeverIndexedHeaderTuple(name, value)
    return (name, value)


def _status_and_fields(
    headers: list[tuple[bytes, bytes]],
) -> tuple[int, list[tuple[bytes, bytes]]]:
    """The ``:status`` and the regular fields of a response head (h2 put pseudo-headers first)."""
    first = headers[0]
    if first[0] == b":status":
        return int(first[1]), headers[1:]
    status = 0
    fields = []
    for name, value in headers:
        if name == b":status":
            status = int(value)
        elif not name.startswith(b":"):
            fields.append((name, value))
    return status, fields
