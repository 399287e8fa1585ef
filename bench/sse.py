"""SSE parsing per event: our sans-IO ``SseReader`` against the ``httpx-sse`` decoder, same run.

Run ``python -m bench.sse`` (the reference needs ``pip install -e '.[bench]'``; without it the
table shows our reader alone). The input is one OpenAI-style chat completion stream: a role chunk,
``--events`` content chunks (``data: {"object":"chat.completion.chunk",...}`` with a seeded
token each, some non-ASCII), a ``finish_reason: stop`` chunk and ``data: [DONE]``. It is
delivered three ways, as a response tap would see it:

* one event per chunk (an upstream flushing every token);
* random-size chunks, uniform from 1 byte to twice the mean event size (``--seed``), so most
  chunks end inside a line and many inside a multi-byte character;
* 64 KiB chunks (a burst read from a buffered upstream).

Ours: ``gateway.protocols.sse.SseReader.feed`` per chunk, ``close`` at the end. The reference is
driven the way ``httpx_sse.EventSource.iter_sse`` drives it over ``httpx.Response.iter_text``, but
without the generators: an incremental UTF-8 decoder with ``errors="replace"`` (httpx's
``TextDecoder``), ``SSELineDecoder`` to split lines (CR, LF, CRLF), ``line.rstrip("\\n")`` and
``SSEDecoder.decode`` per line, then ``flush``; its events are counted where ``iter_sse`` would
yield them, ours come in the list ``feed`` returns. Before timing, both parsers' events (data,
type, id) are compared on every delivery; a difference stops the run. Each figure is the median
of ``--rounds`` passes, the parsers interleaved (ours, reference, ours, ...) so a noisy neighbour
hits both alike; the garbage collector is off during a pass. ``speedup`` is the reference's
median time over the row's. Timings are reported, never checked.
"""

from __future__ import annotations

import argparse
import codecs
import gc
import json
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

from gateway.protocols.sse import SseReader

WORDS = [" the", " model", " stream", "s", " token", ",", ".", " über", " café", " 🙂", "\u2019s"]
BIG_CHUNK = 64 * 1024

Parser = Callable[[list[bytes], list[Any] | None], int]


def openai_stream(events: int, seed: int) -> bytes:
    """A chat completion stream of ``events`` content chunks, ending in ``data: [DONE]``."""
    rng = random.Random(seed)

    def chunk(delta: dict[str, str], finish: str | None = None) -> bytes:
        body = {
            "id": "chatcmpl-A9bench7Qz",
            "object": "chat.completion.chunk",
            "created": 1718000000,
            "model": "gpt-4o-mini-2024-07-18",
            "system_fingerprint": "fp_0ba0d124f1",
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()

    lines = [chunk({"role": "assistant", "content": ""})]
    lines += [chunk({"content": rng.choice(WORDS)}) for _ in range(events)]
    lines += [chunk({}, "stop"), b"data: [DONE]"]
    return b"\n\n".join(lines) + b"\n\n"


def deliveries(stream: bytes, seed: int) -> list[tuple[str, list[bytes]]]:
    """The stream cut three ways: per event, seeded random sizes, 64 KiB."""
    per_event = [event + b"\n\n" for event in stream.split(b"\n\n")[:-1]]
    mean = len(stream) // len(per_event)
    rng = random.Random(seed)
    random_chunks, at = [], 0
    while at < len(stream):
        size = rng.randint(1, 2 * mean)
        random_chunks.append(stream[at : at + size])
        at += size
    big = [stream[at : at + BIG_CHUNK] for at in range(0, len(stream), BIG_CHUNK)]
    return [
        ("one event per chunk", per_event),
        (f"random 1-{2 * mean} B", random_chunks),
        ("64 KiB chunks", big),
    ]


def ours(chunks: list[bytes], keep: list[Any] | None = None) -> int:
    """Events our reader returns for the chunks (also appended to ``keep``, if given)."""
    reader = SseReader()
    count = 0
    for chunk in chunks:
        events = reader.feed(chunk)
        count += len(events)
        if keep is not None:
            keep += events
    return count + len(reader.close())


def httpx_sse_parser() -> Parser | None:
    """httpx-sse's decoders driven as ``iter_sse`` drives them; None if it is not installed."""
    try:
        from httpx_sse._decoders import SSEDecoder, SSELineDecoder
    except ImportError:
        return None
    new_text_decoder = codecs.getincrementaldecoder("utf-8")

    def parse(chunks: list[bytes], keep: list[Any] | None = None) -> int:
        text_decoder = new_text_decoder(errors="replace")
        lines = SSELineDecoder()
        decoder = SSEDecoder()
        count = 0
        for chunk in chunks:
            text = text_decoder.decode(chunk)
            if text:
                for line in lines.decode(text):
                    sse = decoder.decode(line.rstrip("\n"))
                    if sse is not None:
                        count += 1
                        if keep is not None:
                            keep.append(sse)
        # End of stream: what iter_text and iter_sse flush.
        for line in lines.decode(text_decoder.decode(b"", True)) + lines.flush():
            sse = decoder.decode(line.rstrip("\n"))
            if sse is not None:
                count += 1
                if keep is not None:
                    keep.append(sse)
        return count

    return parse


def summary(events: list[Any]) -> list[tuple[str, str, str]]:
    """(data, type, id) per event, comparable across both parsers' event types."""
    return [(event.data, event.event, event.id or "") for event in events]


def timed(parser: Parser, chunks: list[bytes]) -> tuple[float, int]:
    """Seconds for one pass over the chunks, and how many events it produced."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        produced = parser(chunks, None)
        return time.perf_counter() - start, produced
    finally:
        gc.enable()


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000, help="content chunks in the stream")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved passes per figure")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    stream = openai_stream(args.events, args.seed)
    cuts = deliveries(stream, args.seed)
    total = len(cuts[0][1])
    reference = httpx_sse_parser()
    parsers: list[tuple[str, Parser]] = [("gateway SseReader", ours)]
    if reference is None:
        print("httpx-sse (>=0.4.2) is not installed, so the reference is skipped")
        print("(pip install -e '.[bench]')\n")
    else:
        parsers.append(("httpx-sse SSEDecoder", reference))
        for name, chunks in cuts:
            ours_events: list[Any] = []
            reference_events: list[Any] = []
            ours(chunks, ours_events)
            reference(chunks, reference_events)
            if summary(ours_events) != summary(reference_events):
                raise SystemExit(f"{name}: the two parsers return different events")

    print(
        f"SSE parsing: {total:,} events, {len(stream) / total:.0f} B mean "
        f"(OpenAI chat.completion.chunk), median of {args.rounds} interleaved passes\n"
    )
    print(
        f"{'delivery':<22} {'chunks':>8}  {'parser':<22} {'events/s':>11} {'µs/event':>9} "
        f"{'speedup':>8}"
    )
    for name, chunks in cuts:
        seconds: dict[str, list[float]] = {label: [] for label, _ in parsers}
        for _ in range(max(1, args.rounds)):
            for label, run in parsers:
                elapsed, produced = timed(run, chunks)
                if produced != total:
                    raise SystemExit(f"{label} on {name}: {produced} events, expected {total}")
                seconds[label].append(elapsed)
        medians = {label: statistics.median(times) for label, times in seconds.items()}
        for i, (label, _) in enumerate(parsers):
            per_event = medians[label] / total
            ratio = medians[parsers[-1][0]] / medians[label]
            print(
                f"{name if i == 0 else '':<22} {len(chunks) if i == 0 else '':>8}  {label:<22} "
                f"{1 / per_event:>11,.0f} {per_event * 1e6:>9.2f} "
                f"{f'{ratio:.2f}x' if reference is not None else '-':>8}"
            )


if __name__ == "__main__":
    main()
