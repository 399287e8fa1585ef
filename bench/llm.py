"""The LLMBackend's cost on streamed chat completions: to a provider direct vs through the gateway.

Run ``python -m bench.llm``. A provider stand-in (:mod:`bench.llm_provider`, uvicorn with
httptools and uvloop) streams its answer at once, one chunk per word; ``ambient gateway`` serves
an LLMBackend in front of it (plugin ``agentgw``; traces sampled off). Three ways, in
interleaved rounds:

* ``direct``: to the stand-in's ``/v1/chat/completions``;
* ``relay``: through the gateway to the same endpoint (same format: the model spliced in place,
  the provider's key injected, the stream relayed as it comes and its usage read);
* ``translated``: through the gateway to the stand-in's ``/v1/messages`` (the OpenAI request
  translated to Anthropic Messages, the stream translated back event by event).

Two measures:

* **time to first token**: one client on one keep-alive connection (httptools, no SDK in the
  way) sends ``--requests`` streamed requests one after another and times the first body byte;
  the gateway's added TTFT is its p50/p99 minus the direct way's, same run;
* **CPU per streamed chunk**: ``wrk -t1 -c16`` streams answers of 1 and of ``--words`` words; the
  gateway's CPU (utime + stime from /proc) per request, and per chunk as the slope between the
  two lengths (so the per-request part does not count as the chunks').

On a 2-core machine the client, the stand-in and the gateway share the cores: the figures compare
the ways on one machine, they are not the gateway's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httptools
import uvloop

from bench.asgi import Launch, start, uvicorn_launch
from bench.processes import Service, cpu_seconds, free_port

ROOT = Path(__file__).resolve().parent.parent
BODY = (
    '{"model":"%s","messages":[{"role":"user","content":"Say hello."}],'
    '"max_tokens":%d,"stream":true}'
)


def config(port: int, provider_port: int) -> str:
    """A Gateway, the provider keys' Secret, the LLMBackend and its route."""
    url = f"http://127.0.0.1:{provider_port}"
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: key}}
stringData: {{key: sk-bench}}
---
apiVersion: agents.ambient.dev/v1alpha1
kind: LLMBackend
metadata: {{name: models}}
spec:
  providers:
  - {{name: openai, type: OpenAI, url: "{url}/v1", apiKeySecretRef: {{name: key, key: key}}}}
  - {{name: claude, type: Anthropic, url: "{url}", apiKeySecretRef: {{name: key, key: key}}}}
  models:
  - {{name: gpt-4o-mini, provider: openai}}
  - {{name: "claude-*", provider: claude}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm}}
spec:
  parentRefs: [{{name: bench}}]
  rules:
  - backendRefs: [{{group: agents.ambient.dev, kind: LLMBackend, name: models}}]
"""


def gateway_launch(provider_port: int) -> Launch:
    port, admin = free_port(), free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench-llm-")
    path = Path(workdir.name, "llm.yaml")
    path.write_text(config(port, provider_port))
    argv = [sys.executable, "-m", "gateway.cli", "gateway", "-f", str(path)]
    argv += ["--admin", f"127.0.0.1:{admin}", "--bind-address", "127.0.0.1"]
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(
        os.environ,
        PYTHONPATH=pythonpath,
        AMBIENT_PLUGINS="agentgw.plugin:register",
        OTEL_TRACES_SAMPLER="always_off",
    )
    return Launch("ambient gateway (LLMBackend)", port, argv, env, workdir.name, workdir)


@dataclass
class Latency:
    """Times of streamed requests on one connection, in milliseconds."""

    first_byte: list[float] = field(default_factory=list)
    whole: list[float] = field(default_factory=list)


class _Answer:
    """httptools callbacks for one response: when its body began and when it ended."""

    def __init__(self) -> None:
        self.status = 0
        self.first: float | None = None
        self.done = asyncio.Event()

    def on_body(self, body: bytes) -> None:
        if self.first is None:
            self.first = time.perf_counter()

    def on_message_complete(self) -> None:
        self.done.set()


async def _sequential(port: int, model: str, words: int, count: int, into: Latency) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = (BODY % (model, words)).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: bench\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    try:
        for _ in range(count):
            answer = _Answer()
            parser = httptools.HttpResponseParser(answer)
            started = time.perf_counter()
            writer.write(request)
            while not answer.done.is_set():
                data = await reader.read(65536)
                if not data:
                    raise RuntimeError("the server closed the connection")
                parser.feed_data(data)
            if parser.get_status_code() != 200 or answer.first is None:
                raise RuntimeError(f"answer {parser.get_status_code()} from port {port}")
            into.first_byte.append((answer.first - started) * 1e3)
            into.whole.append((time.perf_counter() - started) * 1e3)
    finally:
        writer.close()


def sequential(port: int, model: str, words: int, count: int, into: Latency) -> None:
    """``count`` streamed requests one after another on one connection, timed into ``into``."""
    uvloop.run(_sequential(port, model, words, count, into))


def wrk_cpu(port: int, model: str, words: int, seconds: float, gateway: Service) -> float:
    """wrk -t1 -c16 streaming answers of ``words`` words; the gateway's CPU µs per request."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = '{BODY % (model, words)}'\n"
        )
    pids = gateway.refresh_pids()
    before = cpu_seconds(pids)
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{seconds:g}s", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    os.unlink(script.name)
    after = cpu_seconds(pids)
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"errors from the server:\n{out}")
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return (after - before) / requests * 1e6


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__)
    parser.add_argument("--requests", type=int, default=300, help="streamed requests per round")
    parser.add_argument("--words", type=int, default=64, help="chunks in a long answer")
    parser.add_argument("--seconds", type=float, default=4.0, help="each wrk run's length")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    args = parser.parse_args(argv)
    provider = start(uvicorn_launch("bench.llm_provider:app"))
    gateway = start(gateway_launch(provider.port))
    ways = {
        "direct": (provider.port, "gpt-4o-mini"),
        "relay": (gateway.port, "gpt-4o-mini"),
        "translated": (gateway.port, "claude-bench"),
    }
    latency = {name: Latency() for name in ways}
    cpu: dict[tuple[str, int], list[float]] = {}
    try:
        for port, model in ways.values():  # warm up: connections, imports, caches
            sequential(port, model, args.words, 50, Latency())
        for _ in range(args.rounds):
            for name, (port, model) in ways.items():
                sequential(port, model, args.words, args.requests, latency[name])
        for _ in range(args.rounds):
            for name in ("relay", "translated"):
                port, model = ways[name]
                for words in (1, args.words):
                    cpu.setdefault((name, words), []).append(
                        wrk_cpu(port, model, words, args.seconds, gateway)
                    )
    finally:
        gateway.stop()
        provider.stop()
    base = latency["direct"].first_byte
    print(
        f"streamed chat completions of {args.words} chunks, {args.requests} x {args.rounds} "
        "one after another on one connection"
    )
    print(
        f"{'way':<12}{'TTFT p50 ms':>12}{'p99 ms':>9}{'added p50':>11}{'added p99':>11}"
        f"{'whole p50 ms':>14}"
    )
    for name, times in latency.items():
        p50, p99 = _pct(times.first_byte, 0.5), _pct(times.first_byte, 0.99)
        added = name != "direct"
        print(
            f"{name:<12}{p50:>12.3f}{p99:>9.3f}"
            f"{(f'{p50 - _pct(base, 0.5):+.3f}' if added else '-'):>11}"
            f"{(f'{p99 - _pct(base, 0.99):+.3f}' if added else '-'):>11}"
            f"{_pct(times.whole, 0.5):>14.3f}"
        )
    print()
    print(f"gateway CPU, wrk -t1 -c16, {args.seconds:g} s runs, median of {args.rounds} rounds")
    long_head = f"µs/request ({args.words})"
    print(f"{'way':<12}{'µs/request (1 chunk)':>22}{long_head:>20}{'µs/chunk':>10}")
    for name in ("relay", "translated"):
        short = statistics.median(cpu[(name, 1)])
        long = statistics.median(cpu[(name, args.words)])
        print(f"{name:<12}{short:>22,.0f}{long:>20,.0f}{(long - short) / (args.words - 1):>10.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
