"""Response taps: observers of a response on its way to the client.

A backend (its ``tap(request)`` method) or an ExtensionRef filter kind (``ExtensionFilters.tap``)
makes a tap per request. The relay calls it with the response head the client gets, each body
chunk *after* the chunk was written to the client, the trailers, and the end — so a tap never
holds bytes back. Requests without taps pay no call and no copy. Tap methods run on the event
loop and must be quick; a tap with slow work hands it to :class:`QueuedTap`, which never blocks.
:class:`SseTap` reads an event-stream response as events (LLM tokens, usage in the last chunk).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

from gateway.protocols.sse import MAX_LINE, SseError, SseEvent, SseReader

log = logging.getLogger(__name__)

Fields = list[tuple[bytes, bytes]]


class ResponseTap(Protocol):
    """What the relay tells a tap."""

    def response_head(self, status: int, headers: Fields) -> None:
        """The response head as the client gets it (lower-case names for HTTP/2 clients)."""

    def response_body(self, chunk: bytes) -> None:
        """A body chunk, already written to the client (the same bytes object: no copy)."""

    def response_trailers(self, trailers: Fields) -> None:
        """Trailers from the upstream (HTTP/2 and gRPC)."""

    def response_end(self, complete: bool) -> None:
        """The response ended; ``complete`` is False when it was cut or the client left."""


TapEvent = tuple[str, object]


class QueuedTap:
    """A tap whose events a coroutine consumes through a bounded queue, off the data path.

    ``consume(event, value)`` is awaited for each event in order: ``("head", (status, fields))``,
    ``("body", chunk)``, ``("trailers", fields)``, ``("end", complete)``. When the consumer falls
    ``limit`` events behind, further body events are dropped (``dropped`` counts them); head and
    end are always delivered. The stream itself is never delayed.
    """

    def __init__(
        self, consume: Callable[[str, object], Awaitable[None]], limit: int = 1024
    ) -> None:
        self._consume = consume
        self._queue: asyncio.Queue[TapEvent | None] = asyncio.Queue()
        self._limit = limit
        self.dropped = 0
        self.task = asyncio.get_running_loop().create_task(self._run())

    def response_head(self, status: int, headers: Fields) -> None:
        """Queue the head."""
        self._queue.put_nowait(("head", (status, headers)))

    def response_body(self, chunk: bytes) -> None:
        """Queue a chunk, or drop it when the consumer is ``limit`` events behind."""
        if self._queue.qsize() >= self._limit:
            self.dropped += 1
            return
        self._queue.put_nowait(("body", chunk))

    def response_trailers(self, trailers: Fields) -> None:
        """Queue the trailers."""
        self._queue.put_nowait(("trailers", trailers))

    def response_end(self, complete: bool) -> None:
        """Queue the end; the consumer task stops after it."""
        self._queue.put_nowait(("end", complete))
        self._queue.put_nowait(None)

    async def _run(self) -> None:
        while (item := await self._queue.get()) is not None:
            try:
                await self._consume(*item)
            except Exception:
                log.exception("queued response tap failed on %s", item[0])


class SseTap:
    """Reads a ``text/event-stream`` response as events, across chunk boundaries.

    ``on_event`` gets each event as it completes (after its bytes reached the client);
    ``on_end(complete, events)`` gets the end: whether the response finished, and how many events
    it carried. Responses of another content type are not parsed. A stream that breaks SSE framing
    (a line longer than ``max_line``) stops being read; the response itself is untouched.
    """

    __slots__ = ("_on_end", "_on_event", "_reader", "events", "max_line")

    def __init__(
        self,
        on_event: Callable[[SseEvent], None] | None = None,
        on_end: Callable[[bool, int], None] | None = None,
        max_line: int = MAX_LINE,
    ) -> None:
        self._on_event = on_event
        self._on_end = on_end
        self._reader: SseReader | None = None
        self.events = 0
        self.max_line = max_line

    def response_head(self, status: int, headers: Fields) -> None:
        """Start reading when the response is an event stream."""
        for name, value in headers:
            if name.lower() == b"content-type":
                if value.split(b";", 1)[0].strip().lower() == b"text/event-stream":
                    self._reader = SseReader(self.max_line)
                return

    def response_body(self, chunk: bytes) -> None:
        """Parse a chunk; each completed event to ``on_event``."""
        reader = self._reader
        if reader is None:
            return
        try:
            events = reader.feed(chunk)
        except SseError as exc:
            log.warning("response tap stops reading an event stream: %s", exc)
            self._reader = None
            return
        self.events += len(events)
        on_event = self._on_event
        if on_event is not None:
            for event in events:
                on_event(event)

    def response_trailers(self, trailers: Fields) -> None:
        """Nothing to read."""

    def response_end(self, complete: bool) -> None:
        """The end, with the number of events seen."""
        if self._on_end is not None:
            self._on_end(complete, self.events)
