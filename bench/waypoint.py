"""Waypoint mode: client -> ztunnel -> waypoint -> ztunnel -> server, against the same path without
the waypoint and against a direct connection, same run.

Run ``python -m bench.waypoint``. Everything is on loopback, each part its own process on uvloop:
a CA, ztunnel node-a (explicit ``--forward`` listeners: one to Service ``echo``, which uses the
waypoint, one to Service ``echo-direct``, the same Pod without a waypoint), ztunnel node-b, the
echo server (``gateway.demo.echo``) as the Pod on node-b, and ``ambient gateway --node node-a``
as the waypoint; the same gateway process also serves a plain HTTP listener to a non-mesh echo,
the reference for its own req/s. Reported:

- p50/p99 of 1 KiB responses at a paced 1,000 req/s (4 keep-alive connections) per path, and
  what the waypoint adds over the two-ztunnel path (target: <= 1 ms at p99);
- the waypoint's CPU per request during that phase (Istio's Envoy waypoint: ~0.25 vCPU per
  1,000 req/s, i.e. ~250 us per request);
- max req/s per path (wrk, 16 connections, closed loop) and the waypoint path's ratio to the
  gateway's own plain-HTTP req/s (target: >= 0.4).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.processes import cpu_seconds, free_port, wait_listening

CLIENT_IP, SERVER_IP, WAYPOINT_IP = "127.0.40.11", "127.0.40.12", "127.0.40.14"
RATE = 1000
CONNECTIONS = 4
REQUESTS = 1000  # per round and path
ROUNDS = 5  # the paths take turns; each percentile is the median of the rounds' values
WRK_SECONDS = 4
REQUEST = b"GET /bytes/1024 HTTP/1.1\r\nHost: echo\r\n\r\n"


def _pod(name: str, ip: str, node: str, sa: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {"serviceAccountName": sa, "nodeName": node},
        "status": {"podIP": ip},
    }


def _service(name: str, vip: str, target: int, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "labels": labels},
        "spec": {
            "clusterIP": vip,
            "selector": {"app": "echo"},
            "ports": [{"name": "http", "port": 80, "targetPort": target}],
        },
    }


def config(echo_port: int, plain_port: int, listen_port: int) -> list[dict[str, Any]]:
    """mesh.yaml + the plain listener's Gateway, route and non-mesh endpoint, in one file."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "default", "labels": {"istio.io/dataplane-mode": "ambient"}},
        },
        _pod("sleep", CLIENT_IP, "node-a", "sleep", app="sleep"),
        _pod("echo", SERVER_IP, "node-b", "echo", app="echo"),
        _pod(
            "waypoint-0",
            WAYPOINT_IP,
            "node-a",
            "waypoint",
            **{
                "gateway.networking.k8s.io/gateway-name": "waypoint",
                "istio.io/dataplane-mode": "none",
            },
        ),
        _service("echo", "10.96.40.10", echo_port, **{"istio.io/use-waypoint": "waypoint"}),
        _service("echo-direct", "10.96.40.11", echo_port),
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "waypoint", "namespace": "default"},
            "spec": {
                "gatewayClassName": "istio-waypoint",
                "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}],
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "plain", "namespace": "default"},
            "spec": {"ports": [{"name": "http", "port": 80, "targetPort": plain_port}]},
        },
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "plain",
                "namespace": "default",
                "labels": {"kubernetes.io/service-name": "plain"},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": plain_port}],
            "endpoints": [{"addresses": ["127.0.0.1"]}],
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": "default"},
            "spec": {
                "gatewayClassName": "ambient",
                "listeners": [{"name": "http", "port": listen_port, "protocol": "HTTP"}],
            },
        },
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "plain", "namespace": "default"},
            "spec": {
                "parentRefs": [{"name": "edge"}],
                "rules": [{"backendRefs": [{"name": "plain", "port": 80}]}],
            },
        },
    ]


@dataclass
class Setup:
    """The processes and the ports each path starts at."""

    directory: Path
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    paths: dict[str, tuple[str, int]] = field(default_factory=dict)

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.procs[name] = proc
        return proc

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def start(directory: Path) -> Setup:
    """Start every process and wait until each path answers."""
    s = Setup(directory)
    echo_port, plain_port = free_port(SERVER_IP), free_port()
    listen_port, hbone = free_port(), free_port(CLIENT_IP)
    via_waypoint, two_ztunnels, ca = free_port(), free_port(), free_port()
    (directory / "mesh.yaml").write_text(
        yaml.safe_dump_all(config(echo_port, plain_port, listen_port))
    )
    s.spawn("ca", "-m", "gateway.cli", "ca", "-f", "mesh.yaml", "--state-dir", "ca",
            "--listen", f"127.0.0.1:{ca}")  # fmt: skip
    echo = s.spawn("echo", "-m", "gateway.demo.echo", "--host", SERVER_IP,
                   "--port", str(echo_port), "--name", "echo")  # fmt: skip
    s.spawn("plain-echo", "-m", "gateway.demo.echo", "--port", str(plain_port))
    deadline = time.monotonic() + 20
    while not (directory / "ca" / "tokens" / "node-b.token").exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the CA did not start")
        time.sleep(0.05)
    common = ["-f", "mesh.yaml", "--ca", f"127.0.0.1:{ca}", "--hbone-port", str(hbone)]
    for node, extra in (
        ("node-b", []),
        ("node-a", ["--forward", f"{via_waypoint}=echo.default:80",
                    "--forward", f"{two_ztunnels}=echo-direct.default:80"]),
    ):  # fmt: skip
        s.spawn(node, "-m", "gateway.cli", "ztunnel", "--node", node, *common, *extra,
                "--admin", f"127.0.0.1:{free_port()}", "--metrics", f"127.0.0.1:{free_port()}",
                "--ready", f"127.0.0.1:{free_port()}")  # fmt: skip
    s.spawn("waypoint", "-m", "gateway.cli", "gateway", *common, "--node", "node-a",
            "--bind-address", "127.0.0.1", "--admin", "off")  # fmt: skip
    wait_listening(echo_port, echo, host=SERVER_IP)
    s.paths = {
        "direct": (SERVER_IP, echo_port),
        "ztunnel -> ztunnel": ("127.0.0.1", two_ztunnels),
        "ztunnel -> waypoint -> ztunnel": ("127.0.0.1", via_waypoint),
        "gateway plain HTTP": ("127.0.0.1", listen_port),
    }
    asyncio.run(_wait_answers(s))
    return s


async def _wait_answers(s: Setup) -> None:
    for name, (host, port) in s.paths.items():
        deadline = time.monotonic() + 30
        while True:
            try:
                await asyncio.wait_for(_one(host, port), 2)
                break
            except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                if time.monotonic() > deadline or any(
                    p.poll() is not None for p in s.procs.values()
                ):
                    raise RuntimeError(f"path {name} does not answer") from None
                await asyncio.sleep(0.2)


async def _one(host: str, port: int) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        await _exchange(reader, writer)
    finally:
        writer.close()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """One request on a keep-alive connection; raises ValueError on a non-200 answer."""
    writer.write(REQUEST)
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise ValueError(head.split(b"\r\n", 1)[0].decode())
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    await reader.readexactly(length)


async def paced(targets: list[tuple[str, int]], requests: int = REQUESTS) -> list[float]:
    """Latencies (ms, sorted) of ``requests`` requests sent at RATE per second, round-robin over
    one keep-alive connection per target (a target may be listed several times)."""
    conns = [await asyncio.open_connection(host, port) for host, port in targets]
    latencies: list[float] = []
    start = time.perf_counter()
    count = len(conns)

    async def worker(index: int) -> None:
        reader, writer = conns[index]
        for n in range(requests // count):
            delay = start + (n * count + index) / RATE - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            began = time.perf_counter()
            await _exchange(reader, writer)
            latencies.append((time.perf_counter() - began) * 1000)

    await asyncio.gather(*(worker(i) for i in range(count)))
    for _, writer in conns:
        writer.close()
    return sorted(latencies)


def percentile(latencies: list[float], q: float) -> float:
    """The ``q`` quantile of sorted values."""
    return latencies[min(len(latencies) - 1, int(len(latencies) * q))]


def wrk(host: str, port: int) -> tuple[float, int]:
    """(requests per second, requests) of wrk, 16 connections, one thread; zeros without wrk."""
    if shutil.which("wrk") is None:
        return 0.0, 0
    out = subprocess.run(
        ["wrk", "-t1", "-c16", f"-d{WRK_SECONDS}s", f"http://{host}:{port}/bytes/1024"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    return (float(rate.group(1)) if rate else 0.0), (int(count.group(1)) if count else 0)


def saturated(host: str, port: int, pid: int) -> tuple[float, float]:
    """Max req/s of a path, and the gateway process's req/s per CPU-second meanwhile (what it
    would serve with a core of its own, whatever the rest of the path costs)."""
    before = cpu_seconds([pid])
    rate, count = wrk(host, port)
    used = cpu_seconds([pid]) - before
    return rate, (count / used if used > 0 else 0.0)


def main(argv: list[str] | None = None) -> int:
    """Run every phase and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-waypoint-") as directory:
        s = start(Path(directory))
        try:
            waypoint_pid = s.procs["waypoint"].pid
            rounds: dict[str, list[tuple[float, float]]] = {name: [] for name in s.paths}
            gateway_cpu = dict.fromkeys(s.paths, 0.0)  # the gateway process's CPU per path
            for target in s.paths.values():
                asyncio.run(paced([target] * CONNECTIONS))  # warm-up: pools, certificates
            for _ in range(ROUNDS):
                for name, target in s.paths.items():
                    before = cpu_seconds([waypoint_pid])
                    latencies = asyncio.run(paced([target] * CONNECTIONS))
                    gateway_cpu[name] += cpu_seconds([waypoint_pid]) - before
                    rounds[name].append((percentile(latencies, 0.5), percentile(latencies, 0.99)))
            cpu = {name: used / (REQUESTS * ROUNDS) for name, used in gateway_cpu.items()}
            results = {
                name: (
                    statistics.median(r[0] for r in rounds[name]),
                    statistics.median(r[1] for r in rounds[name]),
                    *saturated(*target, waypoint_pid),
                )
                for name, target in s.paths.items()
            }
        finally:
            s.stop()
    _report(results, cpu)
    return 0


def _report(results: dict[str, tuple[float, float, float, float]], cpu: dict[str, float]) -> None:
    print(f"1 KiB responses, {RATE} req/s paced over {CONNECTIONS} connections, {ROUNDS} rounds "
          f"of {REQUESTS} requests per path (median of the rounds' percentiles); "
          f"max req/s: wrk -c16 -t1 {WRK_SECONDS}s\n")  # fmt: skip
    print(f"{'path':34} {'p50 ms':>8} {'p99 ms':>8} {'max req/s':>10}")
    for name, (p50, p99, rps, _) in results.items():
        print(f"{name:34} {p50:8.3f} {p99:8.3f} {rps:10.0f}")
    base = results["ztunnel -> ztunnel"]
    via = results["ztunnel -> waypoint -> ztunnel"]
    print()
    print(f"waypoint adds p50 {via[0] - base[0]:+.3f} ms, p99 {via[1] - base[1]:+.3f} ms "
          f"over the two-ztunnel path (target: <= 1 ms at p99)")  # fmt: skip
    waypoint, plain = cpu["ztunnel -> waypoint -> ztunnel"], cpu["gateway plain HTTP"]
    print(f"waypoint CPU per request: {waypoint * 1e6:.0f} us (= {waypoint * RATE:.2f} vCPU "
          f"per 1,000 req/s; Istio's Envoy waypoint ~0.25); the same process as a plain HTTP "
          f"proxy at the same rate: {plain * 1e6:.0f} us ({waypoint / plain:.1f}x)")  # fmt: skip
    plain_max = results["gateway plain HTTP"]
    if plain_max[2] and plain_max[3]:
        print(f"max req/s, waypoint path / the gateway's plain HTTP: {via[2]:.0f} / "
              f"{plain_max[2]:.0f} = {via[2] / plain_max[2]:.2f}x (target: >= 0.4x; end to end, "
              f"the two ztunnels share the cores)")  # fmt: skip
        print(f"  per core of the gateway process under that load: {via[3]:.0f} / "
              f"{plain_max[3]:.0f} req/s = {via[3] / plain_max[3]:.2f}x")  # fmt: skip
    print(f"two-ztunnel path / direct p99: {base[1] / results['direct'][1]:.2f}x")


if __name__ == "__main__":
    raise SystemExit(main())
