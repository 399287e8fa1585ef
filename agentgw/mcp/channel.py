"""Upstream sessions whose answers come back out of band: stdio children, legacy SSE streams.

A :class:`Channel` matches answers to waiting requests by id and queues everything else the
upstream says (notifications, its own requests) for the session's GET stream. Channels live in
this process only (:class:`Channels`, by the name the session id holds): another process does
not have them, answers as an upstream whose session expired, and the federation initialises
the target again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from agentgw.http1 import Http1Pool
from agentgw.mcp.upstream import Reply, UpstreamError, UpstreamSessionGone

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 60.0


@dataclass(slots=True)
class Channel:
    """One upstream session: what ends it, requests waiting for answers, other messages."""

    target: str
    send: Callable[[dict[str, Any]], Awaitable[None]]  # one message to the upstream
    close: Callable[[], Awaitable[None]]  # ends the carrier (kills the child, drops the stream)
    pending: dict[Any, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    events: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)
    used: float = field(default_factory=time.monotonic)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    open: bool = True

    def deliver(self, message: dict[str, Any]) -> None:
        """A message from the upstream: an awaited answer, or one for the GET stream."""
        future = self.pending.pop(message.get("id"), None) if "method" not in message else None
        if future is not None and not future.done():
            future.set_result(message)
        else:
            self.events.put_nowait(message)

    def failed(self, reason: str) -> None:
        """The carrier ended: waiting requests fail with ``reason``, the GET stream ends."""
        self.open = False
        for future in self.pending.values():
            if not future.done():
                future.set_exception(UpstreamError(self.target, reason))
        self.pending.clear()
        self.events.put_nowait(None)

    def expect(self, id: Any) -> asyncio.Future[dict[str, Any]]:
        """A future for the answer to the request ``id`` about to be sent."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[id] = future
        return future

    async def answer(
        self, id: Any, future: asyncio.Future[dict[str, Any]], timeout: float
    ) -> AsyncIterator[dict[str, Any]]:
        """The answer to ``id`` (one message), within the idle timeout."""
        try:
            yield await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError as exc:
            raise UpstreamError(self.target, "idle timeout: the server did not answer") from exc
        finally:
            self.pending.pop(id, None)

    async def reply(self, message: dict[str, Any], session: str, timeout: float) -> Reply:
        """Send ``message``; the reply holds the answer to a request, nothing otherwise."""
        request = "method" in message and "id" in message
        future = self.expect(message["id"]) if request else None
        try:
            await self.send(message)
        except BaseException:
            if request:
                self.pending.pop(message["id"], None)
            raise
        if future is None:
            return Reply(session, _nothing())
        return Reply(session, self.answer(message["id"], future, timeout))

    async def stream(self) -> AsyncIterator[dict[str, Any]]:
        """What the upstream says besides answers, until the channel ends."""
        while (message := await self.events.get()) is not None:
            yield message


@dataclass(slots=True)
class Channels:
    """This process's channels by name, and each target's restart back-off."""

    running: dict[str, Channel] = field(default_factory=dict)
    backoff: dict[str, tuple[float, float]] = field(default_factory=dict)  # target -> (until, s)

    def get(self, name: str | None, target: str) -> Channel:
        """The open channel ``name``; UpstreamSessionGone when this process has none."""
        channel = self.running.get(name or "")
        if channel is None or not channel.open:
            raise UpstreamSessionGone(target, "no upstream session for it in this process")
        channel.used = time.monotonic()
        return channel

    def check_backoff(self, target: str) -> None:
        """UpstreamError while ``target`` may not be started again yet."""
        until, _ = self.backoff.get(target, (0.0, 0.0))
        left = until - time.monotonic()
        if left > 0:
            raise UpstreamError(target, f"the server died; restarting in {left:.1f}s")

    def died(self, name: str, channel: Channel) -> None:
        """``channel`` ended without being asked: forget it and back its target off."""
        if self.running.get(name) is channel:
            del self.running[name]
            _, last = self.backoff.get(channel.target, (0.0, 0.0))
            delay = min(_BACKOFF_MAX, last * 2 if last else _BACKOFF_FIRST)
            self.backoff[channel.target] = (time.monotonic() + delay, delay)

    async def reap(self, target: str, idle: float) -> None:
        """End ``target``'s channels unused for ``idle`` seconds (abandoned sessions)."""
        now = time.monotonic()
        for name, channel in list(self.running.items()):
            if channel.target == target and now - channel.used > idle:
                await self.end(name)

    async def end(self, name: str) -> None:
        """End the channel ``name`` (its session ended)."""
        channel = self.running.pop(name, None)
        if channel is None:
            return
        await channel.close()
        for task in channel.tasks:
            task.cancel()
        await asyncio.gather(*channel.tasks, return_exceptions=True)
        channel.failed("the session ended")

    async def stop(self) -> None:
        """End every channel (the gateway stops)."""
        for name in list(self.running):
            with contextlib.suppress(Exception):
                await self.end(name)


async def _nothing() -> AsyncIterator[dict[str, Any]]:
    return
    yield  # an empty async generator


class ChannelUpstream:
    """An upstream whose sessions are channels (stdio children, legacy SSE streams): what is
    sent, listened to and ended is the same whatever carries it; ``_open`` makes the carrier
    of a new session. Mixed into frozen dataclasses with ``name``, ``idle_timeout`` and
    ``channels`` fields."""

    __slots__ = ()
    name: str
    idle_timeout: float
    channels: Channels

    async def _open(self, pool: Http1Pool) -> tuple[str, Channel]:
        raise NotImplementedError

    @contextlib.asynccontextmanager
    async def exchange(
        self,
        pool: Http1Pool,
        message: dict[str, Any],
        session: str | None,
        version: str | None,
    ) -> AsyncIterator[Reply]:
        """Send ``message`` in the session (a new carrier for ``initialize``); the reply holds
        the answer to a request, nothing for a notification or a response."""
        if message.get("method") == "initialize" and session is None:
            session, channel = await self._open(pool)
        else:
            channel = self.channels.get(session, self.name)
        assert session is not None
        yield await channel.reply(message, session, self.idle_timeout)

    @contextlib.asynccontextmanager
    async def listen(
        self, pool: Http1Pool, session: str | None, version: str | None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]] | None]:
        """What the upstream says besides answers, as long as the carrier lasts."""
        yield self.channels.get(session, self.name).stream()

    async def terminate(self, pool: Http1Pool, session: str, version: str | None) -> None:
        """End the session's carrier (kill the child, drop the stream)."""
        await self.channels.end(session)
