"""Response taps: the SSE tap across chunk boundaries, and the queued tap's bounded hand-off."""

from __future__ import annotations

import asyncio

from gateway.protocols.sse import SseEvent
from gateway.taps import QueuedTap, SseTap

SSE = [(b"content-type", b"text/event-stream; charset=utf-8")]
STREAM = (
    b'data: {"t": 1}\n\ndata: {"t": 2}\n\nevent: usage\ndata: {"tokens": 7}\n\ndata: [DONE]\n\n'
)


def test_sse_tap_reads_events_cut_anywhere_and_counts_them() -> None:
    for step in (1, 3, 7, len(STREAM)):
        seen: list[SseEvent] = []
        ended: list[tuple[bool, int]] = []
        tap = SseTap(seen.append, lambda complete, n, ended=ended: ended.append((complete, n)))
        tap.response_head(200, SSE)
        for at in range(0, len(STREAM), step):
            tap.response_body(STREAM[at : at + step])
        tap.response_end(True)
        assert [e.data for e in seen] == ['{"t": 1}', '{"t": 2}', '{"tokens": 7}', "[DONE]"]
        assert seen[2].event == "usage"
        assert ended == [(True, 4)]


def test_sse_tap_leaves_other_content_types_alone() -> None:
    seen: list[SseEvent] = []
    tap = SseTap(seen.append)
    tap.response_head(200, [(b"Content-Type", b"application/json")])
    tap.response_body(STREAM)
    assert seen == [] and tap.events == 0


def test_sse_tap_stops_reading_a_stream_that_breaks_framing() -> None:
    seen: list[SseEvent] = []
    tap = SseTap(seen.append, max_line=64)
    tap.response_head(200, SSE)
    tap.response_body(b"data: " + b"x" * 100)  # a line over the limit: the tap gives up
    tap.response_body(b"\n\ndata: later\n\n")
    assert seen == [] and tap.events == 0


async def test_queued_tap_never_blocks_and_drops_what_a_stalled_consumer_cannot_take() -> None:
    gate = asyncio.Event()
    read: list[tuple[str, object]] = []

    async def consume(kind: str, value: object) -> None:
        await gate.wait()
        read.append((kind, value))

    tap = QueuedTap(consume, limit=3)
    tap.response_head(200, SSE)
    for i in range(10):
        tap.response_body(b"chunk %d" % i)  # returns at once: the consumer has not run
    tap.response_end(True)
    assert read == [] and tap.dropped == 8  # head and two chunks queued, eight dropped
    gate.set()
    await asyncio.wait_for(tap.task, 5)
    assert [kind for kind, _ in read] == ["head", "body", "body", "end"]
    assert read[1][1] == b"chunk 0" and read[-1][1] is True


async def test_queued_tap_survives_a_failing_consumer() -> None:
    read: list[str] = []

    async def consume(kind: str, value: object) -> None:
        if kind == "body":
            raise RuntimeError("consumer bug")
        read.append(kind)

    tap = QueuedTap(consume)
    tap.response_head(200, SSE)
    tap.response_body(b"x")
    tap.response_end(False)
    await asyncio.wait_for(tap.task, 5)
    assert read == ["head", "end"]
