"""The simulator's cost per generated token: 8 replicas in one process against the echo's SSE.

Run ``python -m bench.sim``. The scheduling benchmark runs 8-16 ``ambient sim`` replicas in one
process on a 2-core machine; this shows whether they could be its bottleneck. In the same run:

* **sim**: ``ambient sim --replicas 8`` (one process, 127.0.0.2 ... 127.0.0.9). ``--streams``
  clients (at most ``--max-num-seqs`` per replica, so nothing queues) each stream
  ``/v1/completions`` requests of ``--tokens`` tokens back to back on a keep-alive connection,
  with a prompt of ~300 tokens (a shared 1 KiB prefix plus the stream's and request's numbers);
  ``/metrics`` of every replica is scraped every 50 ms, as the endpoint picker does.
* **echo /sse** (the reference): ``python -m gateway.demo.echo`` streaming the same number of
  events per request (``/sse?events=N&interval_ms=M``) to the same number of streams, each event
  from its own timer (the simulator has one timer per replica per step).

Two loads: *paced* (``--time-scale 1``: an 8B model's real latencies, the echo's interval set to
the simulator's full-batch ITL) and *saturated* (``--time-scale 0.001`` against ``interval_ms=0``:
both servers as fast as one core lets them). Server CPU is read from ``/proc`` over the measured
window (``--seconds``, after a 1 s warm-up, to the end of the requests in flight); tokens are what
the client received, checked against ``vllm:generation_tokens_total``. A third section times the
engine alone on a virtual clock (no sockets) and one ``/metrics`` render. Reported, never checked.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import re
import resource
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass

import uvloop

from bench.processes import Service, cpu_seconds, free_port, start_echo, wait_listening
from inference_ext.sim.config import SimConfig
from inference_ext.sim.engine import Engine, Sequence
from inference_ext.sim.metrics import Exposition
from inference_ext.sim.tokenizer import text_prompt

_END = b"0\r\n\r\n"
_PREFIX = "You are a helpful assistant. Answer briefly and cite sources. " * 16  # ~1 KiB


class Load:
    """Counts what the clients received; ``running`` false lets streams finish and stop."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.events = 0
        self.running = True
        self.open = 0
        self.idle = asyncio.Event()


class StreamClient(asyncio.Protocol):
    """One keep-alive connection streaming request after request."""

    def __init__(self, load: Load, requests: list[bytes]) -> None:
        self.load = load
        self.requests = requests
        self.sent = 0
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.load.open += 1
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        self.transport.write(self.requests[self.sent % len(self.requests)])
        self.sent += 1

    def data_received(self, data: bytes) -> None:
        load = self.load
        load.events += data.count(load.marker)
        tail = self.tail + data[-5:]
        self.tail = tail[-5:]
        if tail.endswith(_END):
            self.tail = b""
            if load.running:
                self._send()
            elif self.transport is not None:
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.load.open -= 1
        if not self.load.open:
            self.load.idle.set()


async def scrape(urls: list[tuple[str, int]], stop: asyncio.Event) -> None:
    """GET /metrics from every replica every 50 ms on keep-alive connections."""
    conns = [await asyncio.open_connection(host, port) for host, port in urls]
    request = b"GET /metrics HTTP/1.1\r\nhost: sim\r\n\r\n"
    while not stop.is_set():
        for reader, writer in conns:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
            await reader.readexactly(length)
        try:
            await asyncio.wait_for(stop.wait(), 0.05)
        except TimeoutError:
            pass
    for _, writer in conns:
        writer.close()


@dataclass
class Result:
    """One row of the table."""

    name: str
    streams: int
    tokens: int
    seconds: float
    server_cpu: float
    client_cpu: float
    received: int  # tokens over the whole run, warm-up included

    @property
    def rate(self) -> float:
        return self.tokens / self.seconds

    def cells(self) -> list[str]:
        return [
            self.name,
            f"{self.streams}",
            f"{self.rate:,.0f}",
            f"{100 * self.server_cpu / self.seconds:.0f}%",
            f"{1e6 * self.server_cpu / max(self.tokens, 1):.1f}",
            f"{100 * self.client_cpu / self.seconds:.0f}%",
        ]


def _client_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def drive(
    name: str,
    targets: list[tuple[str, int]],
    requests: list[list[bytes]],
    marker: bytes,
    pids: list[int],
    seconds: float,
    scrape_targets: list[tuple[str, int]] | None = None,
) -> Result:
    """Run one stream per ``requests`` entry for ``seconds`` after a 1 s warm-up."""
    loop = asyncio.get_running_loop()
    load = Load(marker)
    for index, stream_requests in enumerate(requests):
        host, port = targets[index % len(targets)]
        await loop.create_connection(lambda r=stream_requests: StreamClient(load, r), host, port)  # type: ignore[misc]
    stop = asyncio.Event()
    scraper = asyncio.create_task(scrape(scrape_targets, stop)) if scrape_targets else None
    await asyncio.sleep(1.0)
    events, cpu, client, start = load.events, cpu_seconds(pids), _client_cpu(), time.monotonic()
    await asyncio.sleep(seconds)
    load.running = False
    await asyncio.wait_for(load.idle.wait(), 120)
    elapsed = time.monotonic() - start
    result = Result(
        name,
        len(requests),
        load.events - events,
        elapsed,
        cpu_seconds(pids) - cpu,
        _client_cpu() - client,
        load.events,
    )
    stop.set()
    if scraper is not None:
        await scraper
    return result


def sim_requests(streams: int, tokens: int) -> list[list[bytes]]:
    """Per stream, a cycle of 16 completion requests (same prefix, own suffixes)."""
    out = []
    for stream in range(streams):
        cycle = []
        for n in range(16):
            body = (
                b'{"model":"llama-3-8b","max_tokens":%d,"stream":true,"prompt":"%b stream %d, '
                b'request %d: go on."}' % (tokens, _PREFIX.encode(), stream, n)
            )
            cycle.append(
                b"POST /v1/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%b" % (len(body), body)
            )
        out.append(cycle)
    return out


def start_sim(replicas: int, max_num_seqs: int, time_scale: float) -> tuple[Service, int]:
    """``ambient sim --replicas N`` in its own process."""
    port = free_port("127.0.0.2")
    argv = [sys.executable, "-m", "gateway.cli", "sim", "--listen", f"127.0.0.2:{port}",
            "--replicas", str(replicas), "--max-num-seqs", str(max_num_seqs),
            "--kv-blocks", "4096", "--time-scale", str(time_scale), "--seed", "7"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    config = SimConfig(host="127.0.0.2")
    wait_listening(port, proc, host=config.replica_host(replicas - 1))
    service = Service("sim", port, proc)
    service.refresh_pids()
    return service, port


def generated_tokens(targets: list[tuple[str, int]]) -> int:
    """The replicas' ``vllm:generation_tokens_total``, summed."""
    total = 0
    for host, port in targets:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        total += int(re.search(r"vllm:generation_tokens_total\{[^}]*\} (\d+)", text).group(1))  # type: ignore[union-attr]
    return total


async def measure(args: argparse.Namespace) -> list[tuple[str, list[Result]]]:
    """Both loads, sim then echo each."""
    config = SimConfig(max_num_seqs=args.max_num_seqs)
    full_batch_itl = config.itl_ms * (1 + config.itl_load_factor)
    sections = []
    for label, scale, interval in (
        (f"paced (time-scale 1, echo every {full_batch_itl:g} ms)", 1.0, full_batch_itl),
        ("saturated (time-scale 0.001, echo interval 0)", 0.001, 0.0),
    ):
        rows = []
        sim, port = start_sim(args.replicas, args.max_num_seqs, scale)
        try:
            targets = [(config.replica_host(i), port) for i in range(args.replicas)]
            before = generated_tokens(targets)
            rows.append(
                await drive(
                    f"sim x{args.replicas}",
                    targets,
                    sim_requests(args.streams, args.tokens),
                    b'"finish_reason":null',
                    sim.pids,
                    args.seconds,
                    scrape_targets=targets,
                )
            )
            served = generated_tokens(targets) - before
        finally:
            sim.stop()
        echo = start_echo()
        try:
            request = (
                f"GET /sse?events={args.tokens}&interval_ms={interval} HTTP/1.1\r\n"
                "host: bench\r\n\r\n"
            ).encode()
            rows.append(
                await drive(
                    "echo /sse (reference)",
                    [("127.0.0.1", echo.port)],
                    [[request]] * args.streams,
                    b'data: {"i"',
                    echo.pids,
                    args.seconds,
                )
            )
        finally:
            echo.stop()
        check = "matches" if served == rows[0].received else f"!= {rows[0].received:,} received"
        sections.append((f"{label}; sim metrics: {served:,} tokens in all ({check})", rows))
    return sections


def engine_alone(tokens: int, requests: int) -> tuple[float, float, int]:
    """µs per token of the engine on a virtual clock, µs per /metrics render, its bytes."""

    class Null:
        def on_token(self, seq: Sequence, now: float) -> None:
            pass

        def on_finish(self, seq: Sequence, now: float) -> None:
            pass

    config = dataclasses.replace(SimConfig(), kv_blocks=8192)
    engine = Engine(config)
    sink = Null()
    prompts = [text_prompt(f"{_PREFIX} request {n}", config.model, 16) for n in range(64)]
    start = time.process_time()
    for n in range(requests):
        engine.submit(Sequence(prompts[n % 64], tokens, sink), 0.0)
    while engine.wake_at is not None:
        engine.advance(engine.wake_at)
    per_token = (time.process_time() - start) / engine.stats.generation_tokens * 1e6
    exposition = Exposition(engine)
    start = time.process_time()
    for _ in range(2000):
        text = exposition.render()
    return per_token, (time.process_time() - start) / 2000 * 1e6, len(text)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.sim``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--replicas", type=int, default=8)
    parser.add_argument("--max-num-seqs", type=int, default=16)
    parser.add_argument("--streams", type=int, default=128, help="concurrent streams in all")
    parser.add_argument("--tokens", type=int, default=64, help="tokens (events) per request")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured window per row")
    args = parser.parse_args(argv)
    header = ["server", "streams", "tokens/s", "server CPU", "CPU µs/token", "client CPU"]
    for label, results in uvloop.run(measure(args)):
        print(f"\n{label}")
        print(table(header, [result.cells() for result in results]))
    per_token, render_us, size = engine_alone(args.tokens, 2000)
    print("\nengine alone (virtual clock, no sockets, batches of 16)")
    print(f"  {per_token:.2f} µs per token; /metrics render {render_us:.1f} µs ({size:,} bytes)")


if __name__ == "__main__":
    main()
