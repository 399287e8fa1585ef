"""The upstream connection pool: keep-alive connections per endpoint, limits as data.

HTTP/1.1 endpoints get one request per connection at a time; HTTP/2 endpoints
(``Endpoint.protocol`` ``"h2c"``, or ``"h2"`` over TLS) get a stream on a shared connection
(``H2Group``). Endpoints with ``tls`` set are dialled by :func:`gateway.proxy.dial.open_connection`
(verified TLS, the handshake within the connect timeout); the rest in cleartext.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from gateway.proxy.dial import Tunnels, open_connection
from gateway.proxy.h2_client import H2ClientConnection, H2ClientStream
from gateway.proxy.upstream import ACTIVE, CLOSED, CONNECTION_CLASSES, IDLE, Http1Connection

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint
    from gateway.proxy.options import PoolLimits

log = logging.getLogger(__name__)

_ID_CACHE_LIMIT = 4096
H2C = "h2c"
H2 = "h2"  # HTTP/2 over TLS
# Owners type what they hold as Http1Connection; an H2ClientStream duck-types the parts they use
# (owner, endpoint, served, no_body, keep_alive, state, pause/resume_reading, abort, close), and
# reaches them under that name until owners are typed against both.
ConnectCallback = Callable[[Http1Connection | None, BaseException | None], None]


class ConnectAttempt:
    """A pending request for a new connection; cancelling it parks the connection as idle."""

    __slots__ = ("callback", "cancelled", "endpoint")

    def __init__(self, endpoint: Endpoint, callback: ConnectCallback) -> None:
        self.endpoint = endpoint
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        """The requester no longer wants a connection."""
        self.cancelled = True


class H2Group:
    """An HTTP/2 endpoint's connections, the dials in flight and the requests waiting on them."""

    __slots__ = ("conns", "count", "dialing", "endpoint", "expected", "serve_scheduled", "waiting")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.conns: list[H2ClientConnection] = []  # ready and taking streams, oldest first
        self.count = 0  # dialling + open (draining ones too), against limits.max_connections
        self.dialing = 0
        # Streams a new connection is expected to take: the last peer limit seen, RFC 9113's
        # recommended minimum before any.
        self.expected = 100
        self.waiting: deque[ConnectAttempt] = deque()
        self.serve_scheduled = False

    def stream(self) -> H2ClientStream | None:
        """A new stream on the oldest connection with a free slot (packing keeps others idle)."""
        for conn in self.conns:  # draining connections left the list; a failed one may linger
            if conn.reserved < conn.max_streams and conn.state is not CLOSED:
                return conn.new_stream()
        return None


class UpstreamPool:
    """Owns every upstream connection of a process.

    ``acquire`` is the synchronous fast path (an idle connection, no task); ``connect`` dials a new
    one, or queues when the endpoint is at ``limits.max_connections``. Connections come back through
    ``release``; those that cannot be reused (response not fully read, ``Connection: close``) are
    closed there. Idle connections expire after ``limits.idle_expiry``.

    For HTTP/2 endpoints the same calls hand out streams: ``acquire`` opens one on a connection
    below the peer's stream limit, ``connect`` queues on a dial in flight (one dial per expected
    connection's worth of waiters, not one per request), ``release`` ends the stream. An HTTP/2
    connection without streams is idle and expires the same way.
    """

    def __init__(self, limits: PoolLimits, connect_timeout: float) -> None:
        self.limits = limits
        self.connect_timeout = connect_timeout
        self._idle: dict[Endpoint, list[Http1Connection]] = {}
        # id(endpoint) -> (endpoint, its list in _idle); the endpoint is held so its id stays its.
        self._idle_by_id: dict[int, tuple[Endpoint, list[Http1Connection]]] = {}
        self._counts: dict[Endpoint, int] = {}  # connecting + idle + active
        self._waiting: dict[Endpoint, deque[ConnectAttempt]] = {}
        self._dials: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._h2: dict[Endpoint, H2Group] = {}
        self._h2_by_id: dict[int, tuple[Endpoint, H2Group]] = {}
        # Waypoint mode: endpoints in the mesh are dialled through HBONE (gateway.waypoint).
        self.tunnels: Tunnels | None = None

    def acquire(self, endpoint: Endpoint) -> Http1Connection | None:
        """An idle connection to ``endpoint`` (most recently used first), or None."""
        # Endpoints are frozen dataclasses whose __hash__ runs in Python: find the idle list by
        # the object's identity first (balancers hand out the same objects every time).
        hit = self._idle_by_id.get(id(endpoint))
        if hit is not None and hit[0] is endpoint:
            idle: list[Http1Connection] | None = hit[1]
        else:
            if endpoint.protocol in (H2C, H2):  # HTTP/2 endpoints never enter these caches
                return cast("Http1Connection | None", self._acquire_h2(endpoint))
            idle = self._idle.get(endpoint)
            if idle is not None:
                if len(self._idle_by_id) >= _ID_CACHE_LIMIT:
                    self._idle_by_id.clear()  # reloads bring new Endpoint objects: stay bounded
                self._idle_by_id[id(endpoint)] = (endpoint, idle)  # keeps the id from reuse
        while idle:
            conn = idle.pop()
            if conn.state is IDLE:
                conn.state = ACTIVE
                return conn
        return None

    def connect(self, endpoint: Endpoint, callback: ConnectCallback) -> ConnectAttempt:
        """Dial a new connection; ``callback(conn, None)`` or ``callback(None, error)`` follows."""
        if endpoint.protocol in (H2C, H2):
            return self._connect_h2(endpoint, callback)
        attempt = ConnectAttempt(endpoint, callback)
        if self._counts.get(endpoint, 0) >= self.limits.max_connections:
            self._waiting.setdefault(endpoint, deque()).append(attempt)
        else:
            self._dial(attempt)
        return attempt

    def release(self, conn: Http1Connection, reusable: bool) -> None:
        """Take a connection back after a response; keep it idle or close it."""
        conn.owner = None
        if not reusable or self._closed or conn.state is not ACTIVE:
            conn.close()
            return
        if conn.reading_paused:
            conn.resume_reading()
        if self._waiting:
            waiting = self._waiting.get(conn.endpoint)
            while waiting:
                attempt = waiting.popleft()
                if not attempt.cancelled:
                    self._running_loop().call_soon(self._hand_over, attempt, conn)
                    return
        idle = conn.idle_list  # the endpoint's list, kept on the connection: no hashing here
        if len(idle) >= self.limits.max_idle:
            conn.close()
            return
        conn.state = IDLE
        loop = self._loop or self._running_loop()
        conn.idle_since = loop.time()
        idle.append(conn)
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.limits.idle_expiry / 2, self._sweep)

    def forget(self, conn: Http1Connection | H2ClientConnection) -> None:
        """A connection closed: stop counting it and let a queued request dial."""
        if isinstance(conn, H2ClientConnection):
            self._forget_h2(conn)
            return
        endpoint = conn.endpoint
        if conn.transport is None:
            return  # never connected; the dial accounted for it
        self._counts[endpoint] = self._counts.get(endpoint, 1) - 1
        if conn in conn.idle_list:
            conn.idle_list.remove(conn)
        if self._waiting:
            self._serve_waiting(endpoint)

    def stats(self) -> dict[str, dict[str, int]]:
        """Open and idle connection counts per endpoint (and open streams for HTTP/2 ones)."""
        stats = {
            str(e): {"open": n, "idle": len(self._idle.get(e, ()))} for e, n in self._counts.items()
        }
        for endpoint, group in self._h2.items():
            stats[str(endpoint)] = {
                "open": group.count,
                "idle": sum(1 for c in group.conns if not c.reserved),
                "streams": sum(c.reserved for c in group.conns),
            }
        return stats

    def close(self) -> None:
        """Close idle connections and stop dialling; active ones close when released."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in list(idle):
                conn.close()
            idle.clear()
        for group in self._h2.values():
            for h2_conn in [c for c in group.conns if not c.reserved]:
                group.conns.remove(h2_conn)
                h2_conn.close()
        for task in list(self._dials):
            task.cancel()

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        # asyncio.get_running_loop() costs a getpid() syscall per call: ask once.
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
        return loop

    def _dial(self, attempt: ConnectAttempt) -> None:
        endpoint = attempt.endpoint
        self._counts[endpoint] = self._counts.get(endpoint, 0) + 1
        task = asyncio.get_running_loop().create_task(self._open(attempt))
        self._dials.add(task)
        task.add_done_callback(self._dials.discard)

    async def _open(self, attempt: ConnectAttempt) -> None:
        endpoint = attempt.endpoint
        loop = asyncio.get_running_loop()
        try:
            factory = CONNECTION_CLASSES.get(endpoint.protocol)
            if factory is None:
                raise ConnectionError(f"upstream protocol {endpoint.protocol!r} is not supported")
            _, conn = await asyncio.wait_for(
                open_connection(loop, lambda: factory(self, endpoint), endpoint, self.tunnels),
                self.connect_timeout,
            )
        except (OSError, TimeoutError, asyncio.CancelledError) as exc:
            self._counts[endpoint] -= 1
            self._serve_waiting(endpoint)
            if not attempt.cancelled:
                error = (
                    exc if not isinstance(exc, TimeoutError) else TimeoutError("connect timeout")
                )
                attempt.callback(None, error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        conn.state = ACTIVE
        conn.idle_list = self._idle.setdefault(endpoint, [])
        if attempt.cancelled or self._closed:
            self.release(conn, True)
        else:
            attempt.callback(conn, None)

    def _hand_over(self, attempt: ConnectAttempt, conn: Http1Connection) -> None:
        if conn.state is not ACTIVE:
            attempt.callback(None, ConnectionError("pooled connection closed"))
        elif attempt.cancelled:
            self.release(conn, True)
        else:
            attempt.callback(conn, None)

    def _serve_waiting(self, endpoint: Endpoint) -> None:
        waiting = self._waiting.get(endpoint)
        while waiting and self._counts.get(endpoint, 0) < self.limits.max_connections:
            attempt = waiting.popleft()
            if not attempt.cancelled:
                self._dial(attempt)
        if waiting is not None and not waiting:
            del self._waiting[endpoint]

    def _sweep(self) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        cutoff = loop.time() - self.limits.idle_expiry
        remaining = False
        for idle in self._idle.values():
            for conn in [c for c in idle if c.idle_since <= cutoff]:
                idle.remove(conn)
                conn.close()
            remaining = remaining or bool(idle)
        for group in self._h2.values():
            for h2_conn in [c for c in group.conns if not c.reserved and c.idle_since <= cutoff]:
                group.conns.remove(h2_conn)
                h2_conn.close()
            remaining = remaining or any(not c.reserved for c in group.conns)
        if remaining and not self._closed:
            self._sweeper = loop.call_later(self.limits.idle_expiry / 2, self._sweep)

    # -- HTTP/2 --------------------------------------------------------------------------------

    def _h2_group(self, endpoint: Endpoint) -> H2Group:
        hit = self._h2_by_id.get(id(endpoint))
        if hit is not None and hit[0] is endpoint:
            return hit[1]
        group = self._h2.get(endpoint)
        if group is None:
            group = self._h2[endpoint] = H2Group(endpoint)
        if len(self._h2_by_id) >= _ID_CACHE_LIMIT:
            self._h2_by_id.clear()
        self._h2_by_id[id(endpoint)] = (endpoint, group)
        return group

    def _acquire_h2(self, endpoint: Endpoint) -> H2ClientStream | None:
        if self._closed:
            return None
        return self._h2_group(endpoint).stream()

    def _connect_h2(self, endpoint: Endpoint, callback: ConnectCallback) -> ConnectAttempt:
        attempt = ConnectAttempt(endpoint, callback)
        loop = self._running_loop()
        if self._closed:
            loop.call_soon(callback, None, ConnectionError("upstream pool closed"))
            return attempt
        group = self._h2_group(endpoint)
        stream = group.stream()
        if stream is not None:
            loop.call_soon(self._hand_over_h2, attempt, stream)
        else:
            group.waiting.append(attempt)
            self._dial_h2(group)
        return attempt

    def _hand_over_h2(self, attempt: ConnectAttempt, stream: H2ClientStream) -> None:
        conn = stream.connection
        if attempt.cancelled:
            stream.close()
        elif conn.goaway or conn.state is CLOSED:
            # The connection stopped taking streams since the slot was taken: wait for another.
            stream.close()
            conn.group.waiting.appendleft(attempt)
            self._serve_h2(conn.group)
        else:
            attempt.callback(cast("Http1Connection", stream), None)

    def _dial_h2(self, group: H2Group) -> None:
        """Dial enough connections for the waiters that dials in flight will not take."""
        loop = self._running_loop()
        limit = self.limits.max_connections
        while len(group.waiting) > group.dialing * group.expected and group.count < limit:
            group.count += 1
            group.dialing += 1
            task = loop.create_task(self._open_h2(group))
            self._dials.add(task)
            task.add_done_callback(self._dials.discard)

    async def _open_h2(self, group: H2Group) -> None:
        endpoint = group.endpoint
        loop = self._running_loop()
        conn: H2ClientConnection | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, conn = await open_connection(
                    loop,
                    lambda: H2ClientConnection(self, endpoint, group),
                    endpoint,
                    self.tunnels,
                )
                await conn.ready  # the peer's SETTINGS: its stream limit is known
                if conn.state is CLOSED:  # lost between its SETTINGS and this resumption
                    raise ConnectionError(f"HTTP/2 connection to {endpoint} closed at once")
        except (OSError, TimeoutError, asyncio.CancelledError) as exc:
            group.dialing -= 1
            group.count -= 1
            if conn is not None and conn.transport is not None:
                conn.state = CLOSED
                conn.transport.abort()
            error = exc if not isinstance(exc, TimeoutError) else TimeoutError("connect timeout")
            self._fail_h2_waiting(group, error)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        group.dialing -= 1
        conn.registered = True
        group.expected = conn.max_streams
        if self._closed:
            conn.close()
            self._fail_h2_waiting(group, ConnectionError("upstream pool closed"))
            return
        group.conns.append(conn)
        self._serve_h2(group)
        if not conn.reserved:
            self.h2_idle(conn)

    def _serve_h2(self, group: H2Group) -> None:
        """Give waiting requests streams while slots last; dial for the rest."""
        group.serve_scheduled = False
        waiting = group.waiting
        while waiting:
            attempt = waiting[0]
            if attempt.cancelled:
                waiting.popleft()
                continue
            stream = group.stream()
            if stream is None:
                break
            waiting.popleft()
            attempt.callback(cast("Http1Connection", stream), None)
        if waiting:
            self._dial_h2(group)

    def _fail_h2_waiting(self, group: H2Group, error: BaseException) -> None:
        """A dial failed: the waiters the remaining dials will not take fail with it."""
        waiting = group.waiting
        while len(waiting) > group.dialing * group.expected:
            attempt = waiting.popleft()
            if not attempt.cancelled:
                attempt.callback(None, error)

    def _forget_h2(self, conn: H2ClientConnection) -> None:
        group = conn.group
        if conn in group.conns:
            group.conns.remove(conn)
        if conn.registered:
            conn.registered = False
            group.count -= 1
            if group.waiting and not self._closed:
                self._dial_h2(group)

    def h2_capacity(self, conn: H2ClientConnection) -> None:
        """A stream slot freed on ``conn`` while requests wait: serve them once this call ends."""
        group = conn.group
        if group.waiting and not group.serve_scheduled and not conn.goaway:
            group.serve_scheduled = True
            self._running_loop().call_soon(self._serve_h2, group)

    def h2_idle(self, conn: H2ClientConnection) -> None:
        """``conn`` has no streams left: close it if it may take none, else start its idle time."""
        if conn.goaway or self._closed:
            if conn in conn.group.conns:
                conn.group.conns.remove(conn)
            conn.close()
            return
        if conn.group.waiting:
            self.h2_capacity(conn)
        loop = self._loop or self._running_loop()
        conn.idle_since = loop.time()
        if self._sweeper is None:
            self._sweeper = loop.call_later(self.limits.idle_expiry / 2, self._sweep)

    def h2_draining(self, conn: H2ClientConnection) -> None:
        """``conn`` got a GOAWAY (or ran out of stream ids): no new streams go there."""
        group = conn.group
        if conn in group.conns:
            group.conns.remove(conn)
        if group.waiting and not self._closed:
            self._dial_h2(group)
