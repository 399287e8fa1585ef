"""HBONE data path: direct TCP vs two ztunnels vs nghttpx (a C HTTP/2 CONNECT tunnel), same run.

Run ``python -m bench.hbone``. Everything is on loopback: a CA, ztunnel node-a (explicit
``--forward`` listener) and node-b, each a separate process on uvloop; the reference is nghttpx in
client mode (HTTP/1.1 CONNECT in, h2 CONNECT over mTLS out) -> nghttpx in secure-proxy mode -> a
tiny CONNECT proxy -> the same echo/sink server. Reported:

- added p50/p99 latency of 1 KiB request/response at a fixed 1,000 req/s (4 connections), and
  the CPU per request spent by the path's own processes meanwhile (the two ztunnels; the two
  nghttpx and the tiny Python CONNECT proxy behind them);
- single-tunnel bulk upload throughput (length-delimited, nghttpx does not forward half-close);
- new tunnelled connections per second on a warm pool (connect + 1 KiB round trip);
- TLS handshakes per second accepted by the inbound side (ztunnel node-b vs nghttpx);
- ztunnel RSS idle and with 1,000 open tunnelled connections.

Every phase is bounded in count and time; the whole run takes well under two minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from bench.processes import cpu_seconds, descendants, free_port, rss_bytes, wait_listening

CLIENT_IP, SERVER_IP = "127.0.30.11", "127.0.30.12"
SIZE = 1024
RATE = 1000
LATENCY_REQUESTS = 3000
BULK_BYTES = 512 * 1024 * 1024
BULK_SECONDS = 8.0
CHURN_SECONDS = 3.0
CHURN_CONCURRENCY = 16
HANDSHAKE_SECONDS = 3.0
HOLD_CONNECTIONS = 1000
REPO = str(Path(__file__).resolve().parents[1])


# ---------------------------------------------------------------- servers run as subprocesses


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError, asyncio.IncompleteReadError):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        head = await reader.readexactly(1)
        if head == b"S":  # sink: 8-byte length, then that many bytes, answer b"k"
            (length,) = struct.unpack("!Q", await reader.readexactly(8))
            while length > 0:
                data = await reader.read(min(length, 1 << 20))
                if not data:
                    break
                length -= len(data)
            writer.write(b"k")
        else:
            writer.write(head)
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        await writer.drain()
    writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(262144):
            writer.write(data)
            await writer.drain()
    writer.close()


async def _connect_proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        target = head.split(b" ", 2)[1].decode()
        host, _, port = target.rpartition(":")
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
        writer.close()
        return
    for w in (writer, up_writer):
        w.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def serve(kind: str, host: str, port: int) -> None:
    """Subprocess entry: run the echo/sink server or the CONNECT proxy until killed."""
    import uvloop

    handler = _echo if kind == "echo" else _connect_proxy

    async def main() -> None:
        server = await asyncio.start_server(handler, host, port, backlog=4096)
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# ---------------------------------------------------------------- process management


def ztunnel_rss_kib(s: Setup) -> tuple[int, int]:
    """Resident set size of node-a's and node-b's ztunnel, in KiB."""
    return (
        rss_bytes([s.ztunnel_pids["node-a"]]) // 1024,
        rss_bytes([s.ztunnel_pids["node-b"]]) // 1024,
    )


@dataclass
class Setup:
    """Everything started for the run."""

    directory: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    echo_port: int = 0
    forward_port: int = 0
    hbone_port: int = 0
    nghttpx_port: int = 0
    nghttpx_server_port: int = 0
    ztunnel_pids: dict[str, int] = field(default_factory=dict)
    nghttpx_server_pid: int = 0
    # the processes each path runs through, for CPU per request
    path_pids: dict[str, list[int]] = field(default_factory=dict)

    def start(self, args: list[str], name: str) -> subprocess.Popen[bytes]:
        """Start a process, logging to a file in the run directory."""
        log = open(self.directory / f"{name}.log", "wb")  # noqa: SIM115 - owned by the process
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")])),
        }
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, env=env
        )
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        """Terminate every process started."""
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def mesh_docs(echo_port: int) -> list[dict[str, object]]:
    """Client pod on node-a, echo pod and Service on node-b."""
    ns = {"istio.io/dataplane-mode": "ambient"}
    return [
        {"kind": "Namespace", "metadata": {"name": "default", "labels": ns}},
        {
            "kind": "Pod",
            "metadata": {"name": "client", "namespace": "default", "labels": {"app": "client"}},
            "spec": {"serviceAccountName": "client", "nodeName": "node-a"},
            "status": {"podIP": CLIENT_IP},
        },
        {
            "kind": "Pod",
            "metadata": {"name": "echo", "namespace": "default", "labels": {"app": "echo"}},
            "spec": {"serviceAccountName": "echo", "nodeName": "node-b"},
            "status": {"podIP": SERVER_IP},
        },
        {
            "kind": "Service",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {
                "clusterIP": "10.96.30.10",
                "selector": {"app": "echo"},
                "ports": [{"port": 80, "targetPort": echo_port}],
            },
        },
    ]


def start_all(directory: Path, with_nghttpx: bool) -> Setup:
    """Start echo, CA, two ztunnels and (optionally) the nghttpx pair."""
    py = sys.executable
    s = Setup(directory)
    s.echo_port = free_port(SERVER_IP)
    echo = s.start(
        [py, "-m", "bench.hbone", "--serve", "echo", SERVER_IP, str(s.echo_port)], "echo"
    )
    wait_listening(s.echo_port, echo, host=SERVER_IP)
    (directory / "mesh.yaml").write_text(yaml.safe_dump_all(mesh_docs(s.echo_port)))
    ca_port = free_port()
    ca = s.start(
        [
            py,
            "-m",
            "mesh",
            "ca",
            "--state-dir",
            "ca",
            "-f",
            "mesh.yaml",
            "--listen",
            f"127.0.0.1:{ca_port}",
            "--log-level",
            "WARNING",
        ],
        "ca",
    )
    wait_listening(ca_port, ca)
    s.hbone_port = free_port(SERVER_IP)
    s.forward_port = free_port()
    for node in ("node-a", "node-b"):
        args = [
            py,
            "-m",
            "mesh",
            "ztunnel",
            "--node",
            node,
            "-f",
            "mesh.yaml",
            "--ca",
            f"127.0.0.1:{ca_port}",
            "--hbone-port",
            str(s.hbone_port),
            "--admin",
            f"127.0.0.1:{free_port()}",
            "--metrics",
            f"127.0.0.1:{free_port()}",
            "--ready",
            f"127.0.0.1:{free_port()}",
            "--log-level",
            os.environ.get("BENCH_LOG", "WARNING"),
            "--event-loop",
            os.environ.get("BENCH_EVENT_LOOP", "auto"),
        ]
        if node == "node-a":
            args += ["--forward", f"{s.forward_port}=echo.default:80"]
        proc = s.start(args, node)
        s.ztunnel_pids[node] = proc.pid
        ready = int(args[args.index("--ready") + 1].rsplit(":", 1)[1])
        wait_listening(ready, proc)
    wait_listening(s.hbone_port, proc, host=SERVER_IP)
    s.path_pids["ztunnel"] = list(s.ztunnel_pids.values())
    if with_nghttpx:
        _start_nghttpx(s)
    return s


def _start_nghttpx(s: Setup) -> None:
    from mesh.identity import SpiffeId, certs

    key = certs.generate_key()
    signer = certs.Signer(certs.create_root("cluster.local", key), key)
    for name, sa in (("server", "echo"), ("client", "client")):
        k = certs.generate_key()
        leaf = certs.issue_svid(SpiffeId("cluster.local", "default", sa), k.public_key(), signer)
        (s.directory / f"ng-{name}-key.pem").write_bytes(certs.key_to_pem(k))
        (s.directory / f"ng-{name}.pem").write_text(certs.cert_to_pem(leaf))
    (s.directory / "ng-root.pem").write_text(certs.cert_to_pem(signer.cert))
    py, d = sys.executable, s.directory
    proxy_port = free_port()
    proxy = s.start(
        [py, "-m", "bench.hbone", "--serve", "proxy", "127.0.0.1", str(proxy_port)], "proxy"
    )
    wait_listening(proxy_port, proxy)
    common = ["nghttpx", "--conf=/dev/null", "--workers=1", "--no-ocsp", "-s"]
    s.nghttpx_server_port = free_port()
    server = s.start(
        [
            *common,
            f"-f127.0.0.1,{s.nghttpx_server_port}",
            f"-b127.0.0.1,{proxy_port}",
            "--verify-client",
            f"--verify-client-cacert={d / 'ng-root.pem'}",
            "--tls-min-proto-version=TLSv1.3",
            "--frontend-http2-window-size=4194304",
            "--frontend-http2-connection-window-size=16777216",
            str(d / "ng-server-key.pem"),
            str(d / "ng-server.pem"),
        ],
        "nghttpx-server",
    )
    wait_listening(s.nghttpx_server_port, server)
    s.nghttpx_server_pid = server.pid
    s.nghttpx_port = free_port()
    client = s.start(
        [
            *common,
            f"-f127.0.0.1,{s.nghttpx_port};no-tls",
            f"-b127.0.0.1,{s.nghttpx_server_port};;proto=h2;tls",
            f"--client-cert-file={d / 'ng-client.pem'}",
            f"--client-private-key-file={d / 'ng-client-key.pem'}",
            "--insecure",
            "--backend-http2-window-size=4194304",
            "--backend-http2-connection-window-size=16777216",
        ],
        "nghttpx-client",
    )
    wait_listening(s.nghttpx_port, client)
    s.path_pids["nghttpx"] = [client.pid, server.pid, proxy.pid]


# ---------------------------------------------------------------- client side measurements

Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


def opener(kind: str, s: Setup) -> Opener:
    """How each path opens a connection to the echo server."""

    async def direct() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(SERVER_IP, s.echo_port)

    async def ztunnel() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", s.forward_port)

    async def nghttpx() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", s.nghttpx_port)
        target = f"{SERVER_IP}:{s.echo_port}"
        writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200" not in head.split(b"\r\n", 1)[0]:
            raise RuntimeError(f"nghttpx CONNECT failed: {head[:40]!r}")
        return reader, writer

    async def opened() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await {"direct": direct, "ztunnel": ztunnel, "nghttpx": nghttpx}[kind]()
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return reader, writer

    return opened


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def latency(open_: Opener, connections: int = 4) -> tuple[float, float]:
    """p50/p99 (ms) of 1 KiB request/response at a fixed total rate, open-loop schedule."""
    conns = [await open_() for _ in range(connections)]
    payload = os.urandom(SIZE)
    for reader, writer in conns:  # warm up
        writer.write(payload)
        await reader.readexactly(SIZE)
    samples: list[float] = []
    per_conn = LATENCY_REQUESTS // connections
    interval = connections / RATE
    start = time.perf_counter() + 0.01

    async def run(index: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for i in range(per_conn):
            due = start + index / RATE + i * interval
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            t0 = time.perf_counter()
            writer.write(payload)
            await reader.readexactly(SIZE)
            samples.append((time.perf_counter() - t0) * 1000)

    await asyncio.wait_for(
        asyncio.gather(*(run(i, r, w) for i, (r, w) in enumerate(conns))),
        LATENCY_REQUESTS / RATE * 4,
    )
    for _, writer in conns:
        writer.close()
    return percentile(samples, 0.5), percentile(samples, 0.99)


async def bulk(open_: Opener) -> float:
    """Gbit/s of one connection uploading up to BULK_BYTES (or BULK_SECONDS) to the sink."""
    reader, writer = await open_()
    chunk = os.urandom(1 << 20)
    t0 = time.perf_counter()
    sent = 0
    total = BULK_BYTES
    writer.write(b"S" + struct.pack("!Q", total))
    while sent < total:
        writer.write(chunk)
        sent += len(chunk)
        await writer.drain()
        if time.perf_counter() - t0 > BULK_SECONDS:
            break
    if sent < total:  # ran out of time: finish the declared length with what is left quickly
        total = sent
    else:
        await asyncio.wait_for(reader.readexactly(1), 30)
    elapsed = time.perf_counter() - t0
    writer.close()
    return total * 8 / elapsed / 1e9


async def churn(open_: Opener) -> tuple[float, int]:
    """New connections per second (each with one 1 KiB round trip) and how many failed."""
    payload = os.urandom(SIZE)
    done = failed = 0
    deadline = time.perf_counter() + CHURN_SECONDS

    async def worker() -> None:
        nonlocal done, failed
        while time.perf_counter() < deadline:
            try:
                reader, writer = await asyncio.wait_for(open_(), 5)
                writer.write(payload)
                await asyncio.wait_for(reader.readexactly(SIZE), 5)
                writer.close()
                done += 1
            except (OSError, RuntimeError, TimeoutError, asyncio.IncompleteReadError):
                failed += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CHURN_CONCURRENCY)))
    return done / (time.perf_counter() - t0), failed


async def handshakes(host: str, port: int, ctx: ssl.SSLContext) -> float:
    """Completed TLS 1.3 handshakes (+ first read) per second against an mTLS listener."""
    done = 0
    deadline = time.perf_counter() + HANDSHAKE_SECONDS

    async def worker() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname="")
            writer.close()
            done += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(8)))
    return done / (time.perf_counter() - t0)


def client_ssl(cert: Path, key: Path, root: Path) -> ssl.SSLContext:
    """An mTLS 1.3 client context (no hostname check, ALPN h2)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(str(root))
    ctx.load_cert_chain(str(cert), str(key))
    ctx.set_alpn_protocols(["h2"])
    return ctx


async def memory(s: Setup) -> tuple[int, int]:
    """(node-a, node-b) RSS in KiB while HOLD_CONNECTIONS tunnelled connections are open."""
    a, b = s.ztunnel_pids["node-a"], s.ztunnel_pids["node-b"]
    open_ = opener("ztunnel", s)
    held = []
    payload = b"x" * 16
    for _ in range(HOLD_CONNECTIONS // 50):
        batch = await asyncio.gather(*(open_() for _ in range(50)))
        for _, writer in batch:
            writer.write(payload)
        for reader, _ in batch:
            await asyncio.wait_for(reader.readexactly(len(payload)), 10)
        held.extend(batch)
    await asyncio.sleep(0.5)
    loaded = rss_bytes([a]) // 1024, rss_bytes([b]) // 1024
    for _, writer in held:
        writer.close()
    return loaded


# ---------------------------------------------------------------- report


def _ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "-"


async def measure(s: Setup, with_nghttpx: bool) -> None:
    """Run every phase and print the table."""
    kinds = ["direct", "ztunnel", *(["nghttpx"] if with_nghttpx else [])]
    idle = (
        rss_bytes([s.ztunnel_pids["node-a"]]) // 1024,
        rss_bytes([s.ztunnel_pids["node-b"]]) // 1024,
    )
    lat: dict[str, tuple[float, float]] = {}
    cpu: dict[str, float] = {}  # µs of CPU per request in the path's own processes
    for k in kinds:
        # nghttpx serves from a forked worker: count every process below the ones started
        pids = [pid for root in s.path_pids.get(k, []) for pid in descendants(root)]
        before_cpu = cpu_seconds(pids)
        lat[k] = await latency(opener(k, s))
        cpu[k] = (cpu_seconds(pids) - before_cpu) / LATENCY_REQUESTS * 1e6
    thr = {k: await bulk(opener(k, s)) for k in kinds}
    conns = {k: await churn(opener(k, s)) for k in kinds}
    d = s.directory
    tls = {}
    root = d / "ca" / "root-cert.pem"
    zctx = await asyncio.to_thread(_ztunnel_client_ssl, d, root)
    tls["ztunnel"] = await handshakes(SERVER_IP, s.hbone_port, zctx)
    if with_nghttpx:
        nctx = client_ssl(d / "ng-client.pem", d / "ng-client-key.pem", d / "ng-root.pem")
        tls["nghttpx"] = await handshakes("127.0.0.1", s.nghttpx_server_port, nctx)
    # Per-connection cost: open the connections, then compare with the RSS just before.
    await asyncio.sleep(0.5)
    before = (
        rss_bytes([s.ztunnel_pids["node-a"]]) // 1024,
        rss_bytes([s.ztunnel_pids["node-b"]]) // 1024,
    )
    loaded = await memory(s)

    d50, d99 = lat["direct"]
    print(
        f"\nbench.hbone — 1 KiB at {RATE} req/s ({LATENCY_REQUESTS} requests), loopback, same run\n"
    )
    print(
        f"{'path':10} {'p50 ms':>8} {'p99 ms':>8} {'+p50 ms':>8} {'+p99 ms':>8} "
        f"{'cpu µs/req':>10} {'bulk Gb/s':>10} {'conn/s':>8} {'failed':>6}"
    )
    for k in kinds:
        p50, p99 = lat[k]
        rate, failed = conns[k]
        print(
            f"{k:10} {p50:8.3f} {p99:8.3f} {p50 - d50:8.3f} {p99 - d99:8.3f} "
            f"{cpu[k]:10.0f} {thr[k]:10.2f} {rate:8.0f} {failed:6d}"
        )
    if with_nghttpx:
        z, n = "ztunnel", "nghttpx"
        print(
            f"\nztunnel / nghttpx: added p99 {_ratio(lat[z][1] - d99, lat[n][1] - d99)}, "
            f"bulk {_ratio(thr[z], thr[n])}, conn/s {_ratio(conns[z][0], conns[n][0])}, "
            f"TLS handshakes/s {tls[z]:.0f} vs {tls[n]:.0f} ({_ratio(tls[z], tls[n])})"
        )
    else:
        print(f"\nTLS handshakes/s (ztunnel inbound): {tls['ztunnel']:.0f}")
    print(
        f"ztunnel RSS idle (after start, before traffic): node-a {idle[0] / 1024:.1f} MiB, "
        f"node-b {idle[1] / 1024:.1f} MiB"
    )
    for i, node in enumerate(("node-a", "node-b")):
        per = (loaded[i] - before[i]) / HOLD_CONNECTIONS
        print(
            f"  {node}: {before[i] / 1024:.1f} MiB after the runs -> {loaded[i] / 1024:.1f} MiB "
            f"with {HOLD_CONNECTIONS} open tunnelled connections ({per:.1f} KiB/conn)"
        )
    print(
        "targets: added p99 <= 1 ms; bulk >= 1 Gbit/s and >= 0.5x nghttpx; "
        "<= 40 MiB idle; <= 10 KiB/conn"
    )


def _ztunnel_client_ssl(d: Path, root: Path) -> ssl.SSLContext:
    from mesh.ca.store import load_or_create
    from mesh.identity import SpiffeId, certs

    material = load_or_create(d / "ca", "cluster.local")
    key = certs.generate_key()
    ident = SpiffeId("cluster.local", "default", "client")
    leaf = certs.issue_svid(ident, key.public_key(), material.signer)
    (d / "bench-client.pem").write_text(certs.cert_to_pem(leaf))
    (d / "bench-client-key.pem").write_bytes(certs.key_to_pem(key))
    return client_ssl(d / "bench-client.pem", d / "bench-client-key.pem", root)


def main() -> int:
    """Entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.hbone", description=__doc__)
    parser.add_argument(
        "--serve", nargs=3, metavar=("KIND", "HOST", "PORT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--no-nghttpx", action="store_true", help="skip the nghttpx reference")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], args.serve[1], int(args.serve[2]))
        return 0
    with_nghttpx = not args.no_nghttpx and shutil.which("nghttpx") is not None
    if not with_nghttpx and not args.no_nghttpx:
        print("nghttpx not found (apt-get install nghttp2-proxy): reference column skipped")
    import uvloop

    with tempfile.TemporaryDirectory(prefix="bench-hbone-") as tmp:
        setup = start_all(Path(tmp), with_nghttpx)
        try:
            uvloop.run(asyncio.wait_for(measure(setup, with_nghttpx), 180))
        finally:
            setup.stop()
            if os.environ.get("BENCH_KEEP"):
                shutil.copytree(tmp, os.environ["BENCH_KEEP"], dirs_exist_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
