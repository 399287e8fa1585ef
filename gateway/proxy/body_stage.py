"""Request-body staging: the request bytes the gateway holds instead of streaming them through.

Most request bodies never stop here: once a try is connected, each chunk goes straight to the
upstream. The gateway holds bytes for three reasons, each bounded:

- **pending**: chunks that arrive before a connection is attached (a dial or an awaited pick in
  flight, a pipelined request waiting its turn); past ``max_buffered_body`` the client is not read
  until they are sent;
- **replay**: every chunk while the request may still be retried, up to ``max_retry_body``; a
  longer body is streamed and the request is not retried;
- **whole**: the whole body, for a stage or a backend that reads it before the endpoint is chosen
  (``needs_body``), up to a cap; past the cap the client gets 413 naming it.

A whole body becomes ``exchange.body`` (bytes a stage, or the backend's pick, may replace); the
upstream then gets those bytes with a Content-Length of their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.request import error_response

if TYPE_CHECKING:
    from gateway.proxy.exchange import Exchange

# Step of the exchange to resume once a whole body has arrived (see Exchange.start).
NO_RESUME = -1


class RequestBody:
    """The chunks held for one request and why (see the module docstring)."""

    __slots__ = ("chunks", "limit", "replay", "resume", "sent", "size", "whole")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0  # bytes in ``chunks``
        self.sent = 0  # chunks already written to the current try
        self.replay = False  # keep every chunk for another try
        self.limit = 0  # the cap while collecting a whole body
        self.resume = NO_RESUME  # the exchange step to run when the whole body is here
        self.whole: bytes | None = None  # the ``exchange.body`` the chunks were staged from

    @property
    def collecting(self) -> bool:
        """True while a stage waits for the whole body."""
        return self.resume != NO_RESUME

    def unsent(self) -> list[bytes]:
        """Chunks the current try has not been sent yet (all of them for a new try)."""
        return self.chunks[self.sent :] if self.sent else self.chunks

    def sent_all(self) -> None:
        """Every chunk went to the current try: forget them unless they may be replayed."""
        if self.replay:
            self.sent = len(self.chunks)
        else:
            self.chunks = []
            self.size = 0
            self.sent = 0

    def join(self) -> bytes:
        """The chunks as one body."""
        chunks = self.chunks
        if not chunks:
            return b""
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def staged(exchange: Exchange) -> RequestBody:
    """The exchange's held body, created on first use."""
    held = exchange.staged
    if held is None:
        held = exchange.staged = RequestBody()
        exchange.end_hook = True
    return held


def hold(exchange: Exchange, data: bytes) -> None:
    """A body chunk that cannot go straight to a connected try."""
    held = staged(exchange)
    attempt = exchange.attempt
    conn = attempt.conn if attempt is not None else None
    if held.collecting:
        held.chunks.append(data)
        held.size += len(data)
        if held.size > held.limit:
            too_large(exchange, held.limit)
        return
    options = exchange.down.options
    if held.replay and exchange.record.request_bytes > options.max_retry_body:
        # Too big to replay: stream it, and give up on retries for this request.
        held.replay = False
        if exchange.retries is not None:
            exchange.retries.lost_replay = True
        if held.sent:
            del held.chunks[: held.sent]
            held.size = sum(len(c) for c in held.chunks)
            held.sent = 0
    if conn is not None:
        attempt.send_body(data)  # type: ignore[union-attr]
        if held.replay:
            held.chunks.append(data)
            held.size += len(data)
            held.sent = len(held.chunks)
        return
    held.chunks.append(data)
    held.size += len(data)
    if held.size > options.max_buffered_body and not held.replay:
        exchange.down.pause_reading_for(exchange, True)


def keep_for_replay(exchange: Exchange) -> None:
    """The request may be retried: keep its body (while it stays under ``max_retry_body``)."""
    if exchange.record.request_bytes > exchange.down.options.max_retry_body:
        if exchange.retries is not None:
            exchange.retries.lost_replay = True
        return
    staged(exchange).replay = True


def collect(exchange: Exchange, limit: int, resume: int) -> bool:
    """Wait for the whole body (at most ``limit`` bytes), then run step ``resume``.

    True when the body is already complete (``exchange.body`` is set, nothing to wait for);
    False when the exchange now waits, or was answered with 413.
    """
    declared = exchange.content_length
    if declared is not None and declared > limit:
        too_large(exchange, limit)
        return False
    held = exchange.staged
    if exchange.request_done:
        exchange.body = held.join() if held is not None else b""
        if held is not None:
            held.chunks = [exchange.body] if exchange.body else []
            held.sent = 0
        return True
    held = staged(exchange)
    if held.size > limit:
        too_large(exchange, limit)
        return False
    held.limit = limit
    held.resume = resume
    if exchange.expect_continue and not held.size:
        exchange.down.interim(100)  # the client waits for this before it sends the body
    return False


def collected(exchange: Exchange) -> int:
    """The request ended while a stage waited for it: set ``exchange.body``; the step to run."""
    held = exchange.staged
    assert held is not None
    step, held.resume = held.resume, NO_RESUME
    exchange.body = held.join()
    held.chunks = [exchange.body] if exchange.body else []
    held.sent = 0
    return step


def too_large(exchange: Exchange, limit: int) -> None:
    """413 naming the cap; the rest of the body is not read (HTTP/1.1 closes the connection)."""
    exchange.answer(
        error_response(
            413, f"request body larger than the limit of {limit} bytes ({_human(limit)})"
        ),
        "-",
        close=True,
    )


def _human(size: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size >= scale:
            return f"{size / scale:g} {unit}"
    return f"{size} B"
