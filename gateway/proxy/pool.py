"""The upstream connection pool: keep-alive connections per endpoint, limits as data."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.proxy.upstream import ACTIVE, CONNECTION_CLASSES, IDLE, Http1Connection

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint
    from gateway.proxy.options import PoolLimits

log = logging.getLogger(__name__)

_ID_CACHE_LIMIT = 4096
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


class UpstreamPool:
    """Owns every upstream connection of a process.

    ``acquire`` is the synchronous fast path (an idle connection, no task); ``connect`` dials a new
    one, or queues when the endpoint is at ``limits.max_connections``. Connections come back through
    ``release``; those that cannot be reused (response not fully read, ``Connection: close``) are
    closed there. Idle connections expire after ``limits.idle_expiry``.
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

    def acquire(self, endpoint: Endpoint) -> Http1Connection | None:
        """An idle connection to ``endpoint`` (most recently used first), or None."""
        # Endpoints are frozen dataclasses whose __hash__ runs in Python: find the idle list by
        # the object's identity first (balancers hand out the same objects every time).
        hit = self._idle_by_id.get(id(endpoint))
        if hit is not None and hit[0] is endpoint:
            idle: list[Http1Connection] | None = hit[1]
        else:
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

    def forget(self, conn: Http1Connection) -> None:
        """A connection closed: stop counting it and let a queued request dial."""
        endpoint = conn.endpoint
        if conn.transport is None:
            return  # never connected; the dial accounted for it
        self._counts[endpoint] = self._counts.get(endpoint, 1) - 1
        if conn in conn.idle_list:
            conn.idle_list.remove(conn)
        if self._waiting:
            self._serve_waiting(endpoint)

    def stats(self) -> dict[str, dict[str, int]]:
        """Open and idle connection counts per endpoint."""
        return {
            str(e): {"open": n, "idle": len(self._idle.get(e, ()))} for e, n in self._counts.items()
        }

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
                loop.create_connection(
                    lambda: factory(self, endpoint), endpoint.address, endpoint.port
                ),
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
        if remaining and not self._closed:
            self._sweeper = loop.call_later(self.limits.idle_expiry / 2, self._sweep)
