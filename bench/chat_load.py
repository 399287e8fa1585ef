"""The scheduling benchmark's load generator: open-loop streaming chat requests, measured.

One asyncio protocol per keep-alive HTTP/1.1 connection, httptools' response parser, on uvloop.
Each request is sent at its arrival time on an idle connection (a new one when none is idle) and
measured as the client sees it: time to first token (request written -> first chunk with content),
the gaps between content chunks (several tokens in one read: the first takes the gap, the others
0), content chunks per second, the usage chunk's ``completion_tokens`` and the answering model.
A failure is a status other than 200, a stream that ends without ``data: [DONE]`` and usage, or
no end within the timeout (the connection is then cut). The answering replica is read from the
response id (the simulator's ``chatcmpl-r<N>-...``).

Why not httpx: streaming 400 answers of 200 tokens from the simulator, this client spent 9.8 µs of
CPU per token and httpx's ``AsyncClient.stream`` with ``aiter_lines`` 52.5 µs (5x), which at a
few thousand tokens/s would take a good part of one of the two cores the servers share.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from httptools import HttpParserError, HttpResponseParser

from bench.chat_workload import Arrival

_CONTENT = b'"delta":{"content":"'
_USAGE = b'"completion_tokens":'
_DONE = b"data: [DONE]"
_REPLICA = b'"id":"chatcmpl-r'
_MODEL = b'"model":"'
_KEEP = 96  # bytes kept across reads: a marker or the usage may straddle two


@dataclass(slots=True)
class Outcome:
    """One request as measured."""

    arrival: Arrival
    sent: float = 0.0  # loop time the request was written
    lag: float = 0.0  # sent - due (the generator's own delay)
    first: float = 0.0  # first content chunk
    last: float = 0.0
    chunks: int = 0  # content chunks received
    usage: int = -1  # completion_tokens from the usage chunk
    status: int = 0
    replica: int = -1  # the simulator that answered (its response ids are chatcmpl-r<N>-...)
    model: str = ""  # the model that answered (the first chunk's ``model``)
    error: str = ""  # "" when it succeeded
    gaps: list[float] = field(default_factory=list)


@dataclass(slots=True)
class Window:
    """Content chunks and completions received while one rate step was being offered."""

    chunks: int = 0
    completed: int = 0


class _Connection(asyncio.Protocol):
    """One keep-alive connection carrying one request at a time."""

    def __init__(self, load: LoadRun) -> None:
        self.load = load
        self.transport: asyncio.Transport | None = None
        self.parser = HttpResponseParser(self)
        self.outcome: Outcome | None = None
        self.tail = b""
        self.timer: asyncio.TimerHandle | None = None
        self.broken = False
        self.done_seen = False  # data: [DONE] arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, outcome: Outcome, timeout: float) -> None:
        assert self.transport is not None
        loop = self.load.loop
        self.outcome = outcome
        self.tail = b""
        self.done_seen = False
        self.parser = HttpResponseParser(self)
        outcome.sent = now = loop.time()
        outcome.lag = now - self.load.due(outcome.arrival)
        self.timer = loop.call_at(now + timeout, self._timeout)
        self.transport.write(outcome.arrival.request)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except HttpParserError as exc:
            self._end(f"bad response: {exc}")

    def on_status(self, status: bytes) -> None:
        if self.outcome is not None:
            self.outcome.status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        outcome = self.outcome
        if outcome is None:
            return
        tail = self.tail
        data = tail + body
        if outcome.replica < 0:
            at = data.find(_REPLICA)
            if at != -1:
                digits = data[at + len(_REPLICA) : at + len(_REPLICA) + 4].split(b"-")[0]
                if digits.isdigit():
                    outcome.replica = int(digits)
        if not outcome.model:
            at = data.find(_MODEL)
            end = data.find(b'"', at + len(_MODEL)) if at != -1 else -1
            if end != -1:
                outcome.model = data[at + len(_MODEL) : end].decode()
        # A marker wholly inside the tail was counted with the previous read.
        tokens = data.count(_CONTENT, max(0, len(tail) - len(_CONTENT) + 1))
        if tokens:
            now = self.load.loop.time()
            if outcome.chunks:
                outcome.gaps.append(now - outcome.last)
                if tokens > 1:
                    outcome.gaps.extend([0.0] * (tokens - 1))
            else:
                outcome.first = now
                if tokens > 1:
                    outcome.gaps.extend([0.0] * (tokens - 1))
            outcome.last = now
            outcome.chunks += tokens
            self.load.window.chunks += tokens
        at = data.find(_USAGE)
        if at != -1:
            digits = data[at + len(_USAGE) : at + len(_USAGE) + 12].split(b",")[0].rstrip(b"}")
            if digits.isdigit() and len(digits) < 12:
                outcome.usage = int(digits)
        if _DONE in data:
            self.done_seen = True
        self.tail = data[-_KEEP:]

    def on_message_complete(self) -> None:
        outcome = self.outcome
        if outcome is None:
            return
        if outcome.status != 200:
            self._end(f"status {outcome.status}")
        elif outcome.usage < 0 or not self.done_seen:
            self._end("stream ended without usage or [DONE]")
        else:
            self._end("")
            if not self.parser.should_keep_alive():
                self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.broken = True
        if self.outcome is not None:
            self._end(f"connection lost ({exc or 'closed'})")

    def _timeout(self) -> None:
        self.timer = None
        self._end("timeout")
        self._close()

    def _close(self) -> None:
        self.broken = True
        if self.transport is not None:
            self.transport.abort()

    def _end(self, error: str) -> None:
        outcome, self.outcome = self.outcome, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if outcome is None:
            return
        outcome.error = error
        if error:
            self._close()  # whatever is left of this answer must not be read as the next one's
        else:
            self.load.window.completed += 1
        self.load.finished(self, outcome)


class LoadRun:
    """Sends the arrivals to ``host:port`` at their times; ``run()`` returns every outcome."""

    def __init__(
        self,
        host: str,
        port: int,
        arrivals: Sequence[Arrival],
        step: float,
        steps: int,
        timeout: float,
        on_window: Callable[[int], None] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.arrivals = arrivals
        self.step = step
        self.timeout = timeout
        self.on_window = on_window  # called as each step ends, with its number from 1
        self.loop = asyncio.get_running_loop()
        self.started = 0.0
        self.idle: list[_Connection] = []
        self.pending = 0
        self.all_done = asyncio.Event()
        self.windows = [Window() for _ in range(steps)]
        self.drain = Window()  # after the last step: not reported
        self.window = self.windows[0]
        self.outcomes: list[Outcome] = []

    def due(self, arrival: Arrival) -> float:
        """The loop time an arrival is due."""
        return self.started + arrival.at

    async def warm(self, connections: int) -> None:
        """Open some connections before the clock starts."""
        for _ in range(connections):
            self.idle.append(await self._connect())

    async def _connect(self) -> _Connection:
        _, conn = await self.loop.create_connection(lambda: _Connection(self), self.host, self.port)
        return conn

    async def run(self) -> list[Outcome]:
        """Offer every arrival, then wait for the last answers (each bounded by the timeout)."""
        loop = self.loop
        self.started = loop.time()
        for index in range(1, len(self.windows) + 1):
            loop.call_at(self.started + index * self.step, self._next_window, index)
        for arrival in self.arrivals:
            delay = self.due(arrival) - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            outcome = Outcome(arrival)
            self.outcomes.append(outcome)
            self.pending += 1
            conn = None
            while self.idle:
                candidate = self.idle.pop()
                if not candidate.broken:
                    conn = candidate
                    break
            if conn is None:
                try:
                    conn = await self._connect()
                except OSError as exc:
                    outcome.error = f"connect: {exc}"
                    self.pending -= 1
                    continue
            conn.send(outcome, self.timeout)
        end = self.started + len(self.windows) * self.step
        if loop.time() < end:
            await asyncio.sleep(end - loop.time())
        if self.pending:
            self.all_done.clear()
            await self.all_done.wait()
        for conn in self.idle:
            conn._close()
        self.idle.clear()
        return self.outcomes

    def _next_window(self, index: int) -> None:
        self.window = self.windows[index] if index < len(self.windows) else self.drain
        if self.on_window is not None:
            self.on_window(index)

    def finished(self, conn: _Connection, outcome: Outcome) -> None:
        """A request ended (well or not); an unbroken connection goes back to the idle list."""
        self.pending -= 1
        if not conn.broken:
            self.idle.append(conn)
        if not self.pending:
            self.all_done.set()

    @property
    def elapsed(self) -> float:
        """Seconds since the run started."""
        return self.loop.time() - self.started


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank), NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]
