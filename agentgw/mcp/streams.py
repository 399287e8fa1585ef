"""Resumable SSE streams of session clients (MCP 2025-06-18 / 2025-11-25): ids, replay, detach.

Every event the gateway sends a session client on a POST answer stream or on the GET stream has
an ``id`` naming its stream and its place in it: ``p.<process>.<n>.<seq>.<request id>`` on the
answer to a request (the request's id as base64url JSON, so that even a process that never saw
the stream can answer that request), ``g.<process>.<n>.<seq>`` on a GET stream. A stream is a
task of its own, not of the HTTP response: when the client's connection drops, the upstream
exchange goes on for :data:`DETACHED_SECONDS` and what it says is kept, so a ``GET`` with
``Last-Event-ID`` gets the events after that id again, then the live stream. Clients of
2025-11-25 get a priming event (an id, empty data) first, so they can resume before the first
message; every stream starts with ``retry:`` :data:`RETRY_MS`.

What is kept is bounded: per session the last :data:`SESSION_EVENTS` events and at most
:data:`SESSION_BYTES` bytes of them, and :data:`TOTAL_BYTES` over every session (the least
recently used session's events go first). Only events a reader was sent are forgotten; a stream
with :data:`SESSION_EVENTS` not sent yet stops reading its upstream until they are. Buffers and
detached streams live in this process only: a session survives a restart or a move to another
replica (its id is sealed state), its replay buffer does not. An id this process does not hold
(another process's, aged out) gets the answer it still can: on a request's stream a JSON-RPC
error to that request (the answer is lost; the client may call again), on a GET stream a new GET
stream (what was said meanwhile is lost).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import itertools
import logging
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from starlette.responses import Response

from agentgw.mcp.jsonrpc import Id

log = logging.getLogger("agentgw.mcp")

SESSION_EVENTS = 256  # events kept per session, over its streams
SESSION_BYTES = 512 * 1024  # bytes of events kept per session
TOTAL_BYTES = 64 * 1024 * 1024  # bytes of events kept per process
DETACHED_SECONDS = 30.0  # how long a stream nobody reads goes on, waiting for a resumption
RETRY_MS = 500  # the reconnection delay clients are told
PRIMING_SINCE = "2025-11-25"  # the first version whose clients expect a priming event

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_HEARTBEAT = b": keep-alive\n\n"
_RETRY = f"retry: {RETRY_MS}\n\n".encode()


class EventIdError(ValueError):
    """A ``Last-Event-ID`` that is not an event id of this gateway."""


@dataclass(frozen=True, slots=True)
class EventId:
    """Where an event is: its stream, its place in it, the request the stream answers."""

    stream: str  # "p.<process>.<n>" or "g.<process>.<n>"
    seq: int
    request: Id | None = None

    def __str__(self) -> str:
        if self.request is None:
            return f"{self.stream}.{self.seq}"
        encoded = base64.urlsafe_b64encode(orjson.dumps(self.request)).rstrip(b"=").decode()
        return f"{self.stream}.{self.seq}.{encoded}"

    @classmethod
    def parse(cls, text: str) -> EventId:
        """The id in ``text``; EventIdError naming what is wrong with it."""
        parts = text.split(".")
        kind = parts[0]
        if (kind, len(parts)) not in (("g", 4), ("p", 5)):
            raise EventIdError(f"{text!r} is not an event id of this gateway")
        _, process, n, seq = parts[:4]
        if not (process.isalnum() and n.isdigit() and seq.isdigit()):
            raise EventIdError(f"{text!r} is not an event id of this gateway")
        request: Id | None = None
        if kind == "p":
            try:
                padded = parts[4] + "=" * (-len(parts[4]) % 4)
                value = orjson.loads(base64.urlsafe_b64decode(padded))
            except (binascii.Error, ValueError) as exc:
                raise EventIdError(f"{text!r}: the request id does not decode") from exc
            if isinstance(value, bool) or not isinstance(value, int | str):
                raise EventIdError(f"{text!r}: the request id is not a string or an integer")
            request = value
        return cls(f"{kind}.{process}.{n}", int(seq), request)


class Sink(Protocol):
    """Where a pump puts the messages it relays."""

    async def put(self, item: Any) -> None: ...


Pump = Callable[[Sink], Awaitable[None]]


class Stream:
    """One SSE stream of a session: the events kept of it, the task feeding it, its readers."""

    def __init__(self, key: str, request: Id | None, kept: SessionEvents) -> None:
        self.key = key
        self.request = request
        self.kept = kept
        self.events: deque[tuple[int, bytes]] = deque()
        self.next_seq = 0
        self.delivered = 0  # events before this one were sent to a reader
        self.done = False
        self.readers = 0
        self.task: asyncio.Task[None] | None = None
        self._generation = 0  # a new reader takes over from older ones
        self._moved = asyncio.Event()
        self._expiry: asyncio.TimerHandle | None = None

    def event_id(self, seq: int) -> str:
        return str(EventId(self.key, seq, self.request))

    def holds_after(self, seq: int) -> bool:
        """True when every event after ``seq`` is still here to be sent."""
        first = self.events[0][0] if self.events else self.next_seq
        return first <= seq + 1 <= self.next_seq

    def prime(self) -> None:
        """The 2025-11-25 priming event: an id and empty data."""
        self._append(b"event: message\nid: %s\ndata: \n\n" % self.event_id(self.next_seq).encode())

    async def put(self, item: Any) -> None:
        """A message to send (and keep); waits while :data:`SESSION_EVENTS` are not sent yet
        (the upstream is read no faster than the client reads)."""
        while self.next_seq - self.delivered >= SESSION_EVENTS:
            moved = self._moved
            await moved.wait()
        data = orjson.dumps(item)
        head = b"event: message\nid: %s\ndata: " % self.event_id(self.next_seq).encode()
        self._append(head + data + b"\n\n")

    def _append(self, event: bytes) -> None:
        self.events.append((self.next_seq, event))
        self.next_seq += 1
        self.kept.add(self, len(event))
        self.wake()

    def wake(self) -> None:
        """Readers look again (something was added, the stream ended, a client left)."""
        self._moved.set()
        self._moved = asyncio.Event()

    def start(self, pump: Pump, closing: contextlib.AsyncExitStack) -> None:
        """Run ``pump`` into this stream; ``closing`` (the upstream exchange) closes after."""

        async def run() -> None:
            try:
                await pump(self)
            except Exception:
                log.exception("mcp: stream %s failed", self.key)
            finally:
                try:
                    await closing.aclose()
                finally:
                    self.done = True
                    self.wake()
                    self.kept.finished(self)

        self.task = asyncio.get_running_loop().create_task(run())

    async def read(
        self,
        after: int,
        heartbeat: float,
        send: Callable[[bytes], Awaitable[None]],
        left: Callable[[], bool],
    ) -> None:
        """Send the events after ``after`` and what comes, until the stream ends, the client
        leaves (``left``), another reader takes over or this one lags past what is kept (the
        client resumes from its last id then)."""
        self._generation += 1
        mine = self._generation
        self.readers += 1
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        try:
            position = after + 1
            while not left() and self._generation == mine:
                moved = self._moved
                first = self.events[0][0] if self.events else self.next_seq
                if position < first:
                    log.info("mcp: stream %s: the reader lagged past the kept events", self.key)
                    return
                pending = list(itertools.islice(self.events, position - first, None))
                for seq, event in pending:
                    await send(event)
                    position = seq + 1
                    if position > self.delivered:
                        self.delivered = position
                        self.wake()
                if pending:
                    continue
                if self.done:
                    return
                try:
                    await asyncio.wait_for(moved.wait(), heartbeat)
                except TimeoutError:
                    await send(_HEARTBEAT)
        finally:
            self.readers -= 1
            if self.readers == 0 and not self.done:
                loop = asyncio.get_running_loop()
                self._expiry = loop.call_later(DETACHED_SECONDS, self._expire)

    def _expire(self) -> None:
        self._expiry = None
        if self.readers == 0 and self.task is not None and not self.task.done():
            log.info("mcp: stream %s: nobody resumed it in %ss; ended", self.key, DETACHED_SECONDS)
            self.task.cancel()

    async def end(self) -> None:
        """Stop feeding the stream (its session ended, the gateway stops)."""
        if self._expiry is not None:
            self._expiry.cancel()
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)


class SessionEvents:
    """One session's streams and the events kept of them, oldest first."""

    def __init__(self, replays: Replays, session_id: str) -> None:
        self.replays = replays
        self.session_id = session_id
        self.streams: dict[str, Stream] = {}
        self.order: deque[tuple[Stream, int]] = deque()
        self.size = 0

    def add(self, stream: Stream, size: int) -> None:
        self.order.append((stream, size))
        self.size += size
        self.replays.total += size
        while len(self.order) > SESSION_EVENTS or self.size > SESSION_BYTES:
            if not self.drop_oldest():
                break
        self.replays.trim()

    def drop_oldest(self) -> bool:
        """Forget the oldest event kept, unless no reader has had it yet."""
        stream, size = self.order[0]
        if stream.events[0][0] >= stream.delivered:
            return False
        self.order.popleft()
        stream.events.popleft()
        self.size -= size
        self.replays.total -= size
        self.finished(stream)
        return True

    def finished(self, stream: Stream) -> None:
        """Forget ``stream`` once it ended and nothing of it is kept."""
        if stream.done and not stream.events and self.streams.get(stream.key) is stream:
            del self.streams[stream.key]
            if not self.streams and self.replays.sessions.get(self.session_id) is self:
                del self.replays.sessions[self.session_id]


class Replays:
    """This process's resumable streams by session, bounded (see the module docstring)."""

    def __init__(self, process: str) -> None:
        self.process = process
        self.sessions: OrderedDict[str, SessionEvents] = OrderedDict()
        self.total = 0
        self._ids = itertools.count()

    def _session(self, session_id: str) -> SessionEvents:
        kept = self.sessions.get(session_id)
        if kept is None:
            kept = self.sessions[session_id] = SessionEvents(self, session_id)
        self.sessions.move_to_end(session_id)
        return kept

    async def open(
        self,
        session_id: str,
        request: Id | None,
        version: str,
        pump: Pump,
        closing: contextlib.AsyncExitStack,
    ) -> Stream:
        """A new stream of ``session_id`` fed by ``pump``: the answer to ``request``, or (None)
        a GET stream, which takes over from one of the session's nobody reads."""
        kept = self._session(session_id)
        if request is None:
            for stream in list(kept.streams.values()):
                if stream.key.startswith("g.") and stream.readers == 0 and not stream.done:
                    await stream.end()  # its upstream GET streams close before new ones open
        kind = "g" if request is None else "p"
        stream = Stream(f"{kind}.{self.process}.{next(self._ids)}", request, kept)
        kept.streams[stream.key] = stream
        if version >= PRIMING_SINCE:
            stream.prime()
        stream.start(pump, closing)
        return stream

    def find(self, session_id: str, event: EventId) -> Stream | None:
        """The stream ``event`` is of, when this process has it and it is of ``session_id``."""
        kept = self.sessions.get(session_id)
        return None if kept is None else kept.streams.get(event.stream)

    def trim(self) -> None:
        """Drop the least recently used sessions' events while over :data:`TOTAL_BYTES`."""
        for session_id in list(self.sessions):
            if self.total <= TOTAL_BYTES:
                return
            kept = self.sessions.get(session_id)
            while kept is not None and kept.order and self.total > TOTAL_BYTES:
                if not kept.drop_oldest():
                    break

    async def end(self, session_id: str) -> None:
        """The session ended: its streams stop, its events go."""
        kept = self.sessions.pop(session_id, None)
        if kept is not None:
            await asyncio.gather(*(stream.end() for stream in list(kept.streams.values())))
            self.total -= kept.size

    async def stop(self) -> None:
        """Every stream stops (the gateway stops)."""
        for session_id in list(self.sessions):
            await self.end(session_id)


class StreamResponse(Response):
    """An SSE response reading a :class:`Stream` from after the event ``after``."""

    def __init__(self, stream: Stream, after: int, heartbeat: float) -> None:
        self.stream = stream
        self.after = after
        self.heartbeat = heartbeat
        self.on_end: Callable[[], None] | None = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        stream = self.stream
        gone = False

        async def watch() -> None:
            nonlocal gone
            while (await receive())["type"] != "http.disconnect":
                pass
            gone = True
            stream.wake()

        async def body(data: bytes) -> None:
            await send({"type": "http.response.body", "body": data, "more_body": True})

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            await body(_RETRY)
            await stream.read(self.after, self.heartbeat, body, lambda: gone)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client left
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            if self.on_end is not None:
                self.on_end()


def lost_answer(event: EventId, error: dict[str, Any]) -> Response:
    """The answer to a resumption of a request's stream this process does not hold: the
    request's JSON-RPC ``error`` as the stream's one event."""
    data = orjson.dumps({**error, "id": event.request})
    return Response(
        _RETRY + b"event: message\ndata: " + data + b"\n\n", 200, media_type="text/event-stream"
    )
