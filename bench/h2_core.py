"""How much would a native HTTP/2 core save? Trivial h2c servers on uvloop, measured with h2load.

Run ``python -m bench.h2_core``. Every server answers every request ``200`` with a 1 KiB body
(``content-type: application/octet-stream``), cleartext HTTP/2 by prior knowledge, one uvloop
process each, started here as ``python -m bench.h2_core --serve IMPL --port N``:

* ``engine``: our ``gateway.proxy.h2_server.H2ServerConnection`` (what the gateway runs) with a
  trivial handler factory (the answer is sent from the handler's ``end()``), i.e. the engine minus
  any proxying;
* ``h2``: a minimal idiomatic asyncio protocol on the pure-Python ``h2`` library, the baseline;
* ``nghttp2 full`` / ``no-headers`` / ``bare``: ``bench.h2_native``, libnghttp2 (the system's C
  library) through ``ctypes``: ``full`` registers the callbacks a real gateway needs
  (``on_begin_headers``, ``on_header`` per field, ``on_frame_recv``, ``on_data_chunk_recv``,
  ``on_stream_close``), ``no-headers`` all but ``on_header``, ``bare`` only ``on_frame_recv``;
  every level has the data provider's read callback. Their differences price a ctypes callback;
  the server counts the callbacks it got and the table shows them per request (``cb/req``);
* ``ngh2``: the PyPI package ``ngh2`` (a compiled extension bundling libnghttp2, h2-like
  events API), measured when it is importable, skipped otherwise;
* ``h1 reference``: a trivial uvloop + httptools HTTP/1.1 server, what a request costs without
  HTTP/2 at all (``h2load --h1``; the multiplexed shape becomes ``-c100 -m1`` for it, since
  HTTP/1.1 cannot multiplex and ``--h1 -m100`` would pipeline).

Two load shapes, each ``h2load -t1 -n<requests>`` after a warm-up run of ``-n<warmup>`` on the
same shape: *multiplexed* ``-c1 -m100`` and *unary* ``-c32 -m1``. req/s is h2load's; CPU per
request is the server process's utime+stime (``/proc``, ``bench.processes.cpu_seconds``) during
the measured run divided by the requests h2load completed. All servers are up for the whole
run and the rounds interleave them (round 1: every implementation, then round 2, ...), so a
noisy neighbour on this shared 2-core machine hits every row alike; the table gives the median
and [min-max] over ``--rounds``. A run is flagged unless h2load reports 0 failed, every request
2xx and exactly 1024 body bytes per request. Ratios are against the engine's median in the
same shape. Before measuring, every h2c server must answer the client preface with SETTINGS.

``--serve IMPL --port N [--profile FILE]`` is the server side (``--profile`` runs it under
cProfile and writes pstats to FILE at SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench.h2 import Shape, parse_h2load, probe_h2c
from bench.processes import cpu_seconds, free_port, wait_listening

BODY = b"x" * 1024
CONTENT_TYPE = (b"content-type", b"application/octet-stream")


# -- servers (run in their own process with --serve) -----------------------------------------


class _TrivialHandler:
    """Our engine's StreamHandler: answer at end of request, ignore the rest."""

    __slots__ = ("stream",)

    def __init__(self, stream: Any) -> None:
        self.stream = stream

    def data(self, data: bytes) -> None:
        self.stream.consumed(len(data))

    def end(self) -> None:
        self.stream.send_headers(200, [CONTENT_TYPE])
        self.stream.send_data(BODY, end_stream=True)

    def trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        pass

    def reset(self, error_code: int) -> None:
        pass

    def write_paused(self, paused: bool) -> None:
        pass


def _engine_factory() -> Callable[[], asyncio.Protocol]:
    from gateway.proxy.h2_server import H2ServerConnection, ServerStream

    def handler(stream: ServerStream, headers: list[tuple[bytes, bytes]]) -> _TrivialHandler:
        return _TrivialHandler(stream)

    return lambda: H2ServerConnection(handler)


def _h2_factory() -> Callable[[], asyncio.Protocol]:
    from h2.config import H2Configuration
    from h2.connection import H2Connection
    from h2.events import DataReceived, RequestReceived, StreamEnded
    from h2.exceptions import ProtocolError

    response = [(b":status", b"200"), CONTENT_TYPE]

    class PlainH2(asyncio.Protocol):
        """The h2 docs' asyncio server pattern, answering on StreamEnded."""

        def __init__(self) -> None:
            self.conn = H2Connection(H2Configuration(client_side=False, header_encoding=None))
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            self.conn.initiate_connection()
            transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            assert self.transport is not None
            conn = self.conn
            try:
                events = conn.receive_data(data)
            except ProtocolError:
                self.transport.write(conn.data_to_send())
                self.transport.close()
                return
            for event in events:
                if isinstance(event, StreamEnded):
                    conn.send_headers(event.stream_id, response)
                    conn.send_data(event.stream_id, BODY, end_stream=True)
                elif isinstance(event, DataReceived):
                    conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, RequestReceived):
                    pass  # answered at StreamEnded
            out = conn.data_to_send()
            if out:
                self.transport.write(out)

    return PlainH2


_NATIVE: list[Any] = []  # nghttp2 protocols, for the callback counts printed at exit


def _nghttp2_factory(level: str) -> Callable[[], asyncio.Protocol]:
    from bench.h2_native import NgHttp2Server, load_nghttp2

    lib = load_nghttp2()

    def make() -> asyncio.Protocol:
        protocol = NgHttp2Server(lib, BODY, level)
        _NATIVE.append(protocol)
        return protocol

    return make


def _ngh2_factory() -> Callable[[], asyncio.Protocol]:
    import ngh2

    settings = {
        ngh2.Setting.MAX_CONCURRENT_STREAMS: 128,
        ngh2.Setting.INITIAL_WINDOW_SIZE: 256 * 1024,
        ngh2.Setting.MAX_HEADER_LIST_SIZE: 64 * 1024,
    }
    response = [(b":status", b"200"), CONTENT_TYPE]
    request_received, data_received = ngh2.RequestReceived, ngh2.DataReceived

    class Ngh2Server(asyncio.Protocol):
        def __init__(self) -> None:
            self.conn = ngh2.Connection(ngh2.Role.SERVER)
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]
            self.conn.initiate_connection(settings)
            transport.write(self.conn.data_to_send())  # type: ignore[attr-defined]

        def data_received(self, data: bytes) -> None:
            assert self.transport is not None
            conn = self.conn
            try:
                conn.receive_data(data)
            except ngh2.NGH2Error:
                self.transport.write(conn.data_to_send())
                self.transport.close()
                return
            for event in conn.events():
                cls = event.__class__
                if (cls is request_received or cls is data_received) and event.end_stream:
                    conn.send_response(event.stream_id, response)
                    conn.send_data(event.stream_id, BODY, end_stream=True)
            out = conn.data_to_send()
            if out:
                self.transport.write(out)

    return Ngh2Server


def _h1_factory() -> Callable[[], asyncio.Protocol]:
    from httptools import HttpRequestParser

    response = (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
        b"content-length: %d\r\n\r\n" % len(BODY) + BODY
    )

    class H1Server(asyncio.Protocol):
        def __init__(self) -> None:
            self.parser = HttpRequestParser(self)
            self.transport: asyncio.Transport | None = None

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport  # type: ignore[assignment]

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except Exception:
                assert self.transport is not None
                self.transport.close()

        def on_message_complete(self) -> None:
            assert self.transport is not None
            self.transport.write(response)

    return H1Server


@dataclass(frozen=True)
class Impl:
    """One server implementation: its row label and how to make its protocol factory."""

    key: str
    label: str
    factory: Callable[[], Callable[[], asyncio.Protocol]]
    h1: bool = False
    native: bool = False


IMPLS = (
    Impl("engine", "engine (gateway h2_server)", _engine_factory),
    Impl("h2", "plain h2 protocol", _h2_factory),
    Impl("nghttp2", "nghttp2 ctypes, full", lambda: _nghttp2_factory("full"), native=True),
    Impl(
        "nghttp2-nohdr",
        "nghttp2 ctypes, no on_header",
        lambda: _nghttp2_factory("no-headers"),
        native=True,
    ),
    Impl("nghttp2-bare", "nghttp2 ctypes, bare", lambda: _nghttp2_factory("bare"), native=True),
    Impl("ngh2", "ngh2 (PyPI, compiled)", _ngh2_factory),
    Impl("h1", "h1 reference (httptools)", _h1_factory, h1=True),
)
BY_KEY = {impl.key: impl for impl in IMPLS}


def _native_stats() -> dict[str, float]:
    """Callbacks per response over every nghttp2 connection this process served."""
    responses = sum(p.responses for p in _NATIVE)
    totals: dict[str, int] = {}
    for protocol in _NATIVE:
        for name, count in protocol.calls.items():
            totals[name] = totals.get(name, 0) + count
    if not responses:
        return {"responses": 0}
    stats: dict[str, float] = {name: count / responses for name, count in totals.items()}
    stats["responses"] = responses
    stats["callbacks"] = sum(totals.values()) / responses
    return stats


def serve(key: str, port: int, profile: str | None) -> None:
    """Serve ``key`` on 127.0.0.1:port until SIGTERM; print nghttp2 callback counts as JSON."""
    import uvloop

    factory = BY_KEY[key].factory()
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = loop.create_future()
        loop.add_signal_handler(signal.SIGTERM, stop.set_result, None)
        server = await loop.create_server(factory, "127.0.0.1", port, backlog=1024)
        if profiler is not None:
            profiler.enable()
        await stop
        if profiler is not None:
            profiler.disable()
        server.close()

    uvloop.run(main())
    if profiler is not None and profile:
        profiler.dump_stats(profile)
    if BY_KEY[key].native:
        print(json.dumps(_native_stats()), flush=True)


# -- driver ----------------------------------------------------------------------------------


SHAPES = (
    Shape("multiplexed", clients=1, streams=100, h1_clients=100, h1_streams=1),
    Shape("unary", clients=32, streams=1, h1_clients=32, h1_streams=1),
)


@dataclass
class Run:
    """One measured h2load run."""

    rps: float
    cpu_us: float
    problems: list[str]


@dataclass
class Server:
    """A started implementation (or why it isn't)."""

    impl: Impl
    proc: subprocess.Popen[bytes] | None = None
    port: int = 0
    skipped: str | None = None
    stats: dict[str, float] = field(default_factory=dict)


def start(impl: Impl) -> Server:
    """Start one server subprocess, or say why it can't run."""
    server = Server(impl)
    if impl.native:
        try:
            from bench.h2_native import load_nghttp2, nghttp2_version

            nghttp2_version(load_nghttp2())
        except (OSError, AttributeError) as exc:
            server.skipped = f"libnghttp2 cannot be loaded: {exc}"
            return server
    if impl.key == "ngh2" and importlib.util.find_spec("ngh2") is None:
        server.skipped = "ngh2 not installed (pip install ngh2)"
        return server
    server.port = free_port()
    server.proc = subprocess.Popen(
        [sys.executable, "-m", "bench.h2_core", "--serve", impl.key, "--port", str(server.port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_listening(server.port, server.proc)
    except RuntimeError as exc:
        stop(server)
        server.skipped = f"did not start: {exc}"
        return server
    if not impl.h1:
        problem = probe_h2c(server.port)
        if problem is not None:
            stop(server)
            server.skipped = f"h2c not served: {problem}"
    return server


def stop(server: Server) -> None:
    """SIGTERM the server, collect its callback counts (nghttp2 rows)."""
    proc = server.proc
    if proc is None or proc.returncode is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    lines = out.decode(errors="replace").strip().splitlines()
    if server.impl.native and lines:
        with contextlib.suppress(ValueError):
            server.stats = json.loads(lines[-1])
    if proc.returncode not in (0, -signal.SIGTERM) and err:
        print(
            f"{server.impl.label}: exit {proc.returncode}: {err.decode()[-500:]}", file=sys.stderr
        )


def h2load(server: Server, shape: Shape, requests: int, account: bool) -> Run:
    """One h2load run against the server; its CPU accounted when ``account``."""
    assert server.proc is not None
    cmd = ["h2load", "-t1", f"-n{requests}", *shape.flags(server.impl.h1)]
    if server.impl.h1:
        cmd.append("--h1")
    cmd.append(f"http://127.0.0.1:{server.port}/")
    pids = [server.proc.pid]
    before = cpu_seconds(pids)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    after = cpu_seconds(pids)
    if proc.returncode != 0:
        raise RuntimeError(f"h2load exited with {proc.returncode}: {proc.stderr.strip()[-300:]}")
    result = parse_h2load(proc.stdout, None)
    problems = result.problems("http/1.1" if server.impl.h1 else "h2c")
    if result.succeeded != requests:
        problems.append(f"{result.succeeded}/{requests} succeeded")
    data = re.search(r"\((\d+)\) data", proc.stdout)
    if data is None or int(data.group(1)) != len(BODY) * result.requests:
        problems.append(f"body bytes {data.group(1) if data else '?'} != {len(BODY)}/request")
    cpu_us = (after - before) / result.requests * 1e6 if result.requests else float("nan")
    return Run(result.rps, cpu_us, problems)


def _spread(values: list[float], pattern: str) -> str:
    if not values:
        return "-"
    median = statistics.median(values)
    if len(values) == 1:
        return format(median, pattern)
    return f"{median:{pattern}} [{min(values):{pattern}}-{max(values):{pattern}}]"


def print_table(servers: list[Server], runs: dict[tuple[str, str], list[Run]], header: str) -> None:
    """Median [min-max] per implementation and shape; ratios against the engine's medians."""
    print(f"\n{header}\n")
    title = (
        f"{'shape':12} {'implementation':30} {'req/s':>22} {'CPU us/req':>20} "
        f"{'CPU vs engine':>14} {'req/s vs engine':>16} {'cb/req':>7}  status"
    )
    print(title)
    print("-" * (len(title) + 10))
    for shape in SHAPES:
        engine = runs.get((shape.name, "engine"), [])
        engine_cpu = statistics.median(r.cpu_us for r in engine) if engine else None
        engine_rps = statistics.median(r.rps for r in engine) if engine else None
        for server in servers:
            impl = server.impl
            label = impl.label + (f" -c{shape.h1_clients}" if impl.h1 else "")
            name = f"{shape.name:12} {label:30}"
            if server.skipped:
                print(f"{name} SKIPPED: {server.skipped}")
                continue
            done = runs.get((shape.name, impl.key), [])
            if not done:
                print(f"{name} FAILED: no run completed")
                continue
            cpu = statistics.median(r.cpu_us for r in done)
            rps = statistics.median(r.rps for r in done)
            problems = sorted({p for r in done for p in r.problems})
            callbacks = server.stats.get("callbacks")
            print(
                f"{name} {_spread([r.rps for r in done], '.0f'):>22} "
                f"{_spread([r.cpu_us for r in done], '.1f'):>20} "
                f"{format(cpu / engine_cpu, '.2f') if engine_cpu else '-':>14} "
                f"{format(rps / engine_rps, '.2f') if engine_rps else '-':>16} "
                f"{format(callbacks, '.1f') if callbacks else '-':>7}  "
                f"{'FLAGGED: ' + ', '.join(problems) if problems else 'ok'}"
            )


def print_callbacks(servers: list[Server]) -> None:
    """The nghttp2 servers' callbacks per response (both shapes, warm-ups included)."""
    lines = []
    for server in servers:
        if server.impl.native and server.stats.get("responses"):
            counts = ", ".join(
                f"{name} {value:.2f}"
                for name, value in server.stats.items()
                if name not in ("responses", "callbacks") and value
            )
            lines.append(f"  {server.impl.label:30} {counts}")
    if lines:
        print("\nctypes callbacks per response (nghttp2 rows):")
        print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    """Serve (with --serve) or start every server, measure, print the table."""
    parser = argparse.ArgumentParser(description="HTTP/2 core CPU/request: h2 vs libnghttp2")
    parser.add_argument("--requests", type=int, default=20000, help="requests per measured run")
    parser.add_argument("--warmup", type=int, default=5000, help="requests per warm-up run")
    parser.add_argument("--rounds", type=int, default=3, help="measured runs per row")
    parser.add_argument(
        "--only", help="comma-separated implementations: " + ",".join(BY_KEY), default=""
    )
    parser.add_argument("--serve", choices=list(BY_KEY), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--profile", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.profile)
        return
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is not installed (apt-get install nghttp2-client)")
    keys = [key for key in args.only.split(",") if key] or list(BY_KEY)
    unknown = [key for key in keys if key not in BY_KEY]
    if unknown:
        raise SystemExit(f"--only: unknown {unknown}; expected some of {','.join(BY_KEY)}")
    impls = [BY_KEY[key] for key in keys]
    if "engine" not in {impl.key for impl in impls}:
        impls.insert(0, BY_KEY["engine"])

    started = time.monotonic()
    servers = [start(impl) for impl in impls]
    for server in servers:
        if server.skipped:
            print(f"{server.impl.label}: skipped: {server.skipped}", file=sys.stderr)
    version = ""
    runs: dict[tuple[str, str], list[Run]] = {}
    try:
        with contextlib.suppress(OSError, AttributeError):
            from bench.h2_native import load_nghttp2, nghttp2_version

            version = nghttp2_version(load_nghttp2())
        for round_ in range(args.rounds):
            for shape in SHAPES:
                for server in servers:
                    if server.skipped:
                        continue
                    try:
                        if round_ == 0 and args.warmup > 0:
                            h2load(server, shape, args.warmup, account=False)
                        run = h2load(server, shape, args.requests, account=True)
                    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                        print(f"{server.impl.label} {shape.name}: {exc}", file=sys.stderr)
                        continue
                    runs.setdefault((shape.name, server.impl.key), []).append(run)
    finally:
        for server in servers:
            stop(server)

    import h2

    print_table(
        servers,
        runs,
        f"h2load -t1 -n{args.requests} after -n{args.warmup} warm-up; multiplexed -c1 -m100, "
        f"unary -c32 -m1; 200 + {len(BODY)} B body; median [min-max] of {args.rounds} rounds; "
        f"h2 {h2.__version__}, libnghttp2 {version or 'not loaded'}; "
        f"{time.monotonic() - started:.0f}s",
    )
    print_callbacks(servers)


if __name__ == "__main__":
    main()
