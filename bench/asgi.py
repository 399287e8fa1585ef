"""An ASGI app answered in the gateway vs the same app under uvicorn.

Run ``python -m bench.asgi``. The Starlette app of :mod:`bench.asgi_apps` is served by uvicorn
(``--http httptools --loop uvloop``, no access log) and mounted in ``ambient gateway`` as an
in-gateway responder (the ``AsgiApp`` backend kind of the same module, loaded through
``AMBIENT_PLUGINS``; routing, metrics and telemetry on, traces sampled off), each in a process
of its own on one core's worth of event loop. Two workloads, in interleaved rounds, medians
shown:

* ``GET /hello`` with ``wrk -t1 -c32``: requests per second, latency, and the server's CPU per
  request (utime + stime from /proc over the requests wrk completed);
* ``GET /sse?n=N``: N small server-sent events per stream as fast as they are taken, read by a
  bounded client (``--streams`` connections, each opening one stream after another, in a
  process of its own): events per second and the server's CPU per event.

There is no extra hop in either: the target is the gateway at >= 1.0x uvicorn's requests per
second.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from bench.asgi_apps import GROUP, HELLO, KIND
from bench.instructions import count, require_valgrind
from bench.processes import Service, cpu_seconds, free_port, wait_listening
from bench.proxy import WrkResult, fmt_or_dash, median_result, run_wrk

ROOT = Path(__file__).resolve().parent.parent
APP = "bench.asgi_apps:app"
BARE = "bench.asgi_apps:bare"


def gateway_config(port: int, app: str = APP) -> str:
    """A Gateway whose every path goes to the AsgiApp ``hello``: ``app`` (``module:name``)."""
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: {GROUP}/v1alpha1
kind: {KIND}
metadata: {{name: hello, namespace: default}}
spec: {{app: "{app}"}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: bench, namespace: default}}
spec:
  parentRefs: [{{name: bench}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /}}}}]
      backendRefs: [{{group: {GROUP}, kind: {KIND}, name: hello}}]
"""


def _environment(**extra: str) -> dict[str, str]:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=pythonpath, **extra)


@dataclass
class Launch:
    """How to start one server: argv, environment, working directory, the port it serves."""

    name: str
    port: int
    argv: list[str]
    env: dict[str, str]
    cwd: str
    workdir: tempfile.TemporaryDirectory[str] | None = None


def gateway_launch(app: str = APP) -> Launch:
    """``ambient gateway`` serving ``app`` as an in-gateway responder (plugin bench.asgi_apps)."""
    port, admin = free_port(), free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench-asgi-")
    config = Path(workdir.name, "routes.yaml")
    config.write_text(gateway_config(port, app))
    argv = [
        sys.executable,
        "-m",
        "gateway.cli",
        "gateway",
        "-f",
        str(config),
        "--admin",
        f"127.0.0.1:{admin}",
        "--bind-address",
        "127.0.0.1",
    ]
    env = _environment(AMBIENT_PLUGINS="bench.asgi_apps", OTEL_TRACES_SAMPLER="always_off")
    return Launch("ambient gateway (responder)", port, argv, env, workdir.name, workdir)


def uvicorn_launch(app: str = APP) -> Launch:
    """uvicorn with httptools and uvloop, access log off, serving ``app``."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--http",
        "httptools",
        "--loop",
        "uvloop",
        "--no-access-log",
        "--log-level",
        "warning",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return Launch("uvicorn httptools+uvloop", port, argv, _environment(), str(ROOT))


def start(launch: Launch) -> Service:
    """Start the server and wait until it listens."""
    proc = subprocess.Popen(
        launch.argv,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=launch.env,
        cwd=launch.cwd,
    )
    wait_listening(launch.port, proc)
    service = Service(launch.name, launch.port, proc, launch.workdir)
    service.refresh_pids()
    return service


def instructions(requests: int, connections: int) -> None:
    """User-space instructions per ``GET /hello`` of both servers, under callgrind, for the
    Starlette app and for the bare ASGI app (the servers' own share)."""
    require_valgrind()
    rows = []
    for app in (APP, BARE):
        for launch in (uvicorn_launch(app), gateway_launch(app)):
            value = count(
                launch.argv,
                launch.port,
                requests=requests,
                connections=connections,
                env=launch.env,
                cwd=launch.cwd,
                path="/hello",
            )
            if launch.workdir is not None:
                launch.workdir.cleanup()
            rows.append((launch.name, app, value))
    n = requests * connections
    print(f"\nuser-space instructions per request (callgrind), {n} keep-alive GET /hello\n")
    header = f"{'server':30} {'app':22} {'instructions':>13} {'vs uvicorn':>10}"
    print(header)
    print("-" * len(header))
    base = {app: value for name, app, value in rows if name.startswith("uvicorn")}
    for name, app, value in rows:
        print(f"{name:30} {app:22} {value:13,.0f} {value / base[app]:10.2f}")


# -- the SSE client ---------------------------------------------------------------------------


_TERMINAL = b"\r\n0\r\n\r\n"


async def _stream_loop(port: int, events: int, deadline: float, done: list[int]) -> None:
    """Open one SSE stream after another on one keep-alive connection until ``deadline``."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = f"GET /sse?n={events} HTTP/1.1\r\nHost: bench\r\n\r\n".encode()
    loop = asyncio.get_running_loop()
    try:
        while loop.time() < deadline:
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200 ") or b"chunked" not in head.lower():
                raise RuntimeError(f"unexpected response head {head!r}")
            tail = b""
            while not tail.endswith(_TERMINAL):
                data = await reader.read(65536)
                if not data:
                    raise RuntimeError("the server closed the stream early")
                tail = (tail + data)[-len(_TERMINAL) :]
            done.append(events)
    finally:
        writer.close()


async def _sse_client(port: int, streams: int, events: int, seconds: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    done: list[int] = []
    start = loop.time()
    await asyncio.gather(
        *(_stream_loop(port, events, start + seconds, done) for _ in range(streams))
    )
    return {"streams": len(done), "events": sum(done), "seconds": loop.time() - start}


@dataclass
class SseResult:
    """What one SSE run measured."""

    events: int
    seconds: float
    cpu_s: float

    @property
    def events_per_s(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_us_per_event(self) -> float:
        return self.cpu_s / self.events * 1e6 if self.events else 0.0


def run_sse(port: int, target: Service, streams: int, events: int, seconds: float) -> SseResult:
    """The SSE client in a process of its own, the target's CPU accounted around it."""
    pids = target.refresh_pids()
    before = cpu_seconds(pids)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.asgi",
            "--sse-client",
            str(port),
            "--streams",
            str(streams),
            "--events",
            str(events),
            "--seconds",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
        env=_environment(),
        cwd=ROOT,
    ).stdout
    after = cpu_seconds(pids)
    figures = json.loads(out)
    return SseResult(int(figures["events"]), float(figures["seconds"]), after - before)


def median_sse(runs: list[SseResult]) -> SseResult:
    """Medians of events per second and CPU per event, as one result."""
    rate = statistics.median(r.events_per_s for r in runs)
    cpu = statistics.median(r.cpu_us_per_event for r in runs)
    events = int(statistics.median(r.events for r in runs))
    return SseResult(events, events / rate, cpu * events / 1e6)


def _check(port: int) -> None:
    """The app answers through ``port`` (a responder misconfigured would answer 500)."""
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/hello", timeout=5) as response:
        body = response.read().decode()
    if body != HELLO:
        raise RuntimeError(f"port {port} answered {body!r}")


def main(argv: list[str] | None = None) -> None:
    """Start both servers, measure in interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description="in-gateway ASGI responder vs uvicorn")
    parser.add_argument("--seconds", type=float, default=3.0, help="wrk duration at -c32")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (medians)")
    parser.add_argument("--streams", type=int, default=16, help="concurrent SSE streams")
    parser.add_argument("--events", type=int, default=200, help="events per SSE stream")
    parser.add_argument("--sse-seconds", type=float, default=3.0, help="SSE run duration")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count user-space instructions per request under callgrind instead (valgrind)",
    )
    parser.add_argument("--requests", type=int, default=300, help="--instructions: per connection")
    parser.add_argument("--sse-client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.instructions:
        instructions(args.requests, 4)
        return
    if args.sse_client is not None:
        import uvloop

        figures = uvloop.run(
            _sse_client(args.sse_client, args.streams, args.events, args.sse_seconds)
        )
        print(json.dumps(figures))
        return
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    services: list[Service] = []
    try:
        services.append(start(uvicorn_launch()))
        services.append(start(gateway_launch()))
        for service in services:
            _check(service.port)
        loaded: dict[str, list[WrkResult]] = {s.name: [] for s in services}
        streamed: dict[str, list[SseResult]] = {s.name: [] for s in services}
        for _ in range(max(1, args.rounds)):
            for service in services:
                run_wrk(service.port, 32, 1, None, "/hello")  # warm up
                loaded[service.name].append(
                    run_wrk(service.port, 32, args.seconds, service, "/hello")
                )
                streamed[service.name].append(
                    run_sse(service.port, service, args.streams, args.events, args.sse_seconds)
                )
    finally:
        for service in reversed(services):
            service.stop()

    wrk = {name: median_result(runs) for name, runs in loaded.items()}
    sse = {name: median_sse(runs) for name, runs in streamed.items()}
    base_name = services[0].name
    base, base_sse = wrk[base_name], sse[base_name]
    print(
        f"\nGET /hello: wrk -t1 -c32 -d{args.seconds:g}s; SSE: {args.streams} streams x "
        f"{args.events} events, {args.sse_seconds:g}s; median of {max(1, args.rounds)} "
        "interleaved rounds\n"
    )
    header = (
        f"{'server':30} {'req/s':>8} {'vs uvicorn':>10} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU us/req':>10} {'events/s':>9} {'vs uvicorn':>10} {'CPU us/event':>12}"
    )
    print(header)
    print("-" * len(header))
    for service in services:
        result, stream = wrk[service.name], sse[service.name]
        print(
            f"{service.name:30} {result.rps:8.0f} {result.rps / base.rps:10.2f} "
            f"{result.p50_ms:7.2f} {result.p99_ms:7.2f} "
            f"{fmt_or_dash(result.cpu_us_per_request, '10.1f')} "
            f"{stream.events_per_s:9.0f} {stream.events_per_s / base_sse.events_per_s:10.2f} "
            f"{stream.cpu_us_per_event:12.2f}"
        )
    print("\nper round (req/s vs uvicorn; events/s vs uvicorn):")
    for service in services[1:]:
        cells = [
            f"{run.rps / ref.rps:.2f}x; {s.events_per_s / sref.events_per_s:.2f}x"
            for run, ref, s, sref in zip(
                loaded[service.name],
                loaded[base_name],
                streamed[service.name],
                streamed[base_name],
                strict=True,
            )
        ]
        print(f"  {service.name:30} " + "   ".join(cells))
    print("\ntarget: the gateway >= 1.0x uvicorn's req/s (the app is the same; no extra hop)")


if __name__ == "__main__":
    main()
