"""HBONE connection pool keyed by (source identity, destination identities, destination address)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from mesh.hbone import protocol as p
from mesh.hbone.transport import H2Transport, TunnelStream
from mesh.identity.spiffe import SpiffeId

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PoolKey:
    """Connections are shared only between tunnels with the same key."""

    source: SpiffeId
    destinations: frozenset[SpiffeId]
    address: tuple[str, int]


Dialer = Callable[[PoolKey], Awaitable[H2Transport]]


class HbonePool:
    """Multiplexes tunnels over pooled HTTP/2 connections; opens more when stream limits are hit."""

    def __init__(
        self,
        dialer: Dialer,
        max_streams: int = p.CLIENT_MAX_STREAMS,
        idle_timeout: float = 300.0,
    ) -> None:
        self.dialer = dialer
        self.max_streams = max_streams
        self.idle_timeout = idle_timeout
        self._conns: dict[PoolKey, list[H2Transport]] = {}
        self._locks: dict[PoolKey, asyncio.Lock] = {}
        self._reaper: asyncio.Task[None] | None = None

    def connections(self, key: PoolKey | None = None) -> list[H2Transport]:
        """Live pooled connections (for one key, or all)."""
        if key is not None:
            return [c for c in self._conns.get(key, []) if not c.closed]
        return [c for conns in self._conns.values() for c in conns if not c.closed]

    def _usable(self, key: PoolKey) -> H2Transport | None:
        for conn in self._conns.get(key, []):
            if conn.usable(self.max_streams):
                return conn
        return None

    async def checkout(self, key: PoolKey) -> H2Transport:
        """A connection with a free stream slot, dialing one (once per key) if needed."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap())
        conn = self._usable(key)
        if conn is not None:
            return conn
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._usable(key)
            if conn is not None:
                return conn
            conn = await self.dialer(key)
            conns = self._conns.setdefault(key, [])
            conns.append(conn)
            previous = conn.on_close

            def forget(closed: H2Transport) -> None:
                if closed in conns:
                    conns.remove(closed)
                if previous:
                    previous(closed)

            conn.on_close = forget
            log.debug("pool: new connection for %s (now %d)", key.address, len(conns))
            return conn

    async def open(self, key: PoolKey, authority: str, headers: p.ConnectHeaders) -> TunnelStream:
        """Open a tunnel to ``authority`` over a pooled connection."""
        conn = await self.checkout(key)
        return await conn.open_tunnel(authority, headers)

    async def _reap(self) -> None:
        interval = max(0.05, min(self.idle_timeout / 4, 5.0))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in self.connections():
                if conn.active_streams == 0 and now - conn.idle_since >= self.idle_timeout:
                    log.debug("pool: closing idle connection")
                    conn.goaway()

    async def close(self) -> None:
        """Drain every connection and stop the reaper."""
        if self._reaper:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for conn in self.connections():
            conn.goaway()
            conn.close()
