"""Fault drills: faults injected into a gateway under steady load (``bench.load_mix``: ~190 short
GETs/s plus 8 SSE streams of 40 events 50 ms apart, ~200 requests/s in all), on loopback.

- a SIGHUP reload every second: no request fails, no stream is cut;
- one of ``--workers 3`` SIGKILLed: it is restarted; the failures are bounded by the client
  connections it held (the worker is SIGSTOPped first and its sockets read from /proc, so that
  set cannot change before the SIGKILL; an HTTP/1.1 connection carries one request at a time and
  a client drops a connection that failed, so each can fail at most one request or stream);
- an upstream SIGKILLed mid-stream: its streams end at once with a truncated body (HTTP/1.1) or a
  reset stream (HTTP/2), never a hang; other streams succeed, and so does every short GET but
  those in flight on it (503); passive health ejects it (connect failures stop growing while
  requests continue);
- an upstream that stops reading and a client that stops reading: the gateway's VmRSS stays
  within a few MiB of what it was, far below what it was sent.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bench.load_mix import MixedLoad
from tests.fixtures.echo_process import EchoProcess, gateway_yaml, route_yaml, service_yaml
from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.processes import command_line, descendants

MiB = 1024 * 1024


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def _workers(supervisor: int) -> list[int]:
    return [p for p in descendants(supervisor) if any("spawn_main" in a for a in command_line(p))]


def _client_connections(pid: int, port: int) -> int:
    """Established connections on listener ``port`` whose socket ``pid`` holds (from /proc)."""
    inodes = set()
    for fd in os.scandir(f"/proc/{pid}/fd"):
        target = os.readlink(fd.path)
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    held = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local_port = int(fields[1].rsplit(":", 1)[1], 16)
            if fields[3] == "01" and local_port == port and fields[9] in inodes:
                held += 1
    return held


def _gateway(tmp_path: Path, config: str, *extra: str) -> GatewayProcess:
    path = tmp_path / "routes.yaml"
    path.write_text(config)
    gw = GatewayProcess([path], *extra)
    gw.wait_ready(timeout=30)
    return gw


@pytest.fixture
def simple(tmp_path: Path, echo_a: EchoProcess) -> Iterator[tuple[str, int]]:
    """The config of one Service (echo_a) behind a route on a free port."""
    port = free_port()
    yield gateway_yaml(port) + service_yaml("svc", echo_a.port) + route_yaml("r", "svc"), port


async def test_reload_every_second_cuts_nothing(tmp_path: Path, simple: tuple[str, int]) -> None:
    config, port = simple
    gw = _gateway(tmp_path, config)
    try:
        load = MixedLoad(f"http://127.0.0.1:{port}")
        running = asyncio.create_task(load.run(12))
        before = gw.config_version()
        for _ in range(10):
            await asyncio.sleep(1)  # the drill's cadence, not a synchronisation
            gw.proc.send_signal(signal.SIGHUP)
        report = await running
        assert gw.config_version() >= before + 10
        assert report.failures == []
        assert report.shorts_ok > 1500 and report.streams_ok >= 8 * 4, report
    finally:
        assert gw.stop() == 0, gw.output()


async def test_killed_worker_is_restarted_and_only_its_requests_fail(
    tmp_path: Path, simple: tuple[str, int]
) -> None:
    config, port = simple
    gw = _gateway(tmp_path, config, "--workers", "3")
    try:
        workers = _workers(gw.proc.pid)
        assert len(workers) == 3
        load = MixedLoad(f"http://127.0.0.1:{port}")
        running = asyncio.create_task(load.run(9))
        await asyncio.sleep(3)  # load established on every worker
        # The workers share one accept queue: the one holding the most connections is killed.
        victim = max(workers, key=lambda pid: _client_connections(pid, port))
        os.kill(victim, signal.SIGSTOP)  # freeze its set of connections while it is read
        held = _client_connections(victim, port)
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        deadline = killed_at + 10
        while True:  # the supervisor checks its workers every second
            now = _workers(gw.proc.pid)
            if len(now) == 3 and victim not in now:
                break
            assert time.monotonic() < deadline, "worker not restarted"
            await asyncio.sleep(0.05)
        await asyncio.to_thread(gw.wait_ready)
        report = await running
        assert held >= 1
        assert len(report.failures) <= held, (held, report.failures)
        assert all(f.started <= killed_at + 1 for f in report.failures), report.failures
        assert report.shorts_ok > 1200, report
    finally:
        assert gw.stop() == 0, gw.output()


def _two_endpoint_config(port: int, echo_port: int) -> str:
    return (
        gateway_yaml(port)
        + route_yaml("r", "svc")
        + f"""
---
apiVersion: v1
kind: Service
metadata: {{name: svc, namespace: default}}
spec:
  ports: [{{name: http, port: 80, targetPort: {echo_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: svc-1, namespace: default, labels: {{kubernetes.io/service-name: svc}}}}
addressType: IPv4
ports: [{{name: http, port: {echo_port}}}]
endpoints: [{{addresses: ["127.0.0.2"]}}, {{addresses: ["127.0.0.3"]}}]
"""
    )


def _connect_failures(admin: str) -> float:
    text = httpx.get(f"{admin}/metrics", timeout=5).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "ambient_gateway_upstream_connect_failures"
        for sample in family.samples
        if sample.name.endswith("_total")
    )


async def _watch_stream(client: httpx.AsyncClient, results: list[tuple[str, str, float]]) -> None:
    """An endless stream: (backend, how it ended, when) once it ends."""
    backend = "?"
    try:
        async with client.stream("GET", "/sse", params={"events": 0, "interval_ms": 50}) as r:
            backend = r.headers.get("x-echo-backend", "?")
            async for _ in r.aiter_raw():
                pass
        results.append((backend, "ended", time.monotonic()))
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        results.append((backend, type(exc).__name__, time.monotonic()))


async def test_killed_upstream_ends_its_streams_and_is_ejected(tmp_path: Path) -> None:
    echo_port = free_port()
    victim = EchoProcess("victim", "127.0.0.2", echo_port)
    survivor = EchoProcess("survivor", "127.0.0.3", echo_port)
    port = free_port()
    gw = _gateway(tmp_path, _two_endpoint_config(port, echo_port))
    base = f"http://127.0.0.1:{port}"
    try:
        load = MixedLoad(base)
        running = asyncio.create_task(load.run(8))
        ended: list[tuple[str, str, float]] = []
        async with (
            httpx.AsyncClient(base_url=base, timeout=10) as h1,
            httpx.AsyncClient(base_url=base, timeout=10, http1=False, http2=True) as h2,
        ):
            streams = [
                asyncio.create_task(_watch_stream(client, ended))
                for client in (h1, h2)
                for _ in range(4)
            ]
            await asyncio.sleep(2)
            failures_before = _connect_failures(gw.admin)
            victim.proc.kill()
            killed_at = time.monotonic()
            # Streams on the victim end within a bound (the idle timeout would be 300 s).
            deadline = killed_at + 5
            while not any(backend == "victim" for backend, _, _ in ended):
                assert time.monotonic() < deadline, "no victim stream ended: a hang"
                await asyncio.sleep(0.05)
            await asyncio.sleep(3)  # requests keep flowing after the kill
            failures_after = _connect_failures(gw.admin)
            for task in streams:
                task.cancel()
            await asyncio.gather(*streams, return_exceptions=True)
        report = await running
        on_victim = [(how, at) for backend, how, at in ended if backend == "victim"]
        assert on_victim and all(how != "ended" for how, _ in on_victim), ended
        assert all(at - killed_at < 2 for _, at in on_victim), ended
        assert all(backend == "victim" for backend, _, _ in ended), ended  # survivors unhurt
        # A short GET the victim had read when it died is answered 503 (no route retry policy):
        # only those in flight at the kill may fail.
        shorts = [f for f in report.failures if f.kind == "short"]
        assert all(f.started <= killed_at + 0.05 for f in shorts), report.failures
        assert len(shorts) <= 5, report.failures
        assert report.shorts_ok > 1000 and report.backends.get("survivor", 0) > 0, report
        # Ejected after 5 consecutive failures: ~3 s of ~190 req/s did not keep dialling it.
        assert failures_after - failures_before <= 5, (failures_before, failures_after)
    finally:
        assert gw.stop() == 0, gw.output()
        victim.stop()
        survivor.stop()


def _stalled_upstream() -> tuple[socket.socket, list[socket.socket]]:
    """A listener on 127.0.0.1 whose accepted connections are never read."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    return listener, accepted


async def test_stalled_peers_do_not_grow_gateway_memory(
    tmp_path: Path, echo_a: EchoProcess
) -> None:
    listener, accepted = _stalled_upstream()
    port = free_port()
    config = (
        gateway_yaml(port)
        + service_yaml("svc", echo_a.port)
        + route_yaml("r", "svc")
        + service_yaml("stuck", listener.getsockname()[1])
        + route_yaml("stuck", "stuck", prefix="/stuck")
    )
    gw = _gateway(tmp_path, config)
    base = f"http://127.0.0.1:{port}"
    try:
        load = MixedLoad(base)
        running = asyncio.create_task(load.run(9))
        await asyncio.sleep(1.5)
        baseline = _rss(gw.proc.pid)

        # An upstream that stops reading: a 256 MiB upload is held back by back-pressure.
        sent = 0

        async def body() -> object:
            nonlocal sent
            chunk = b"u" * (64 * 1024)
            while sent < 256 * MiB:
                sent += len(chunk)
                yield chunk

        async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(2.5)) as client:
            with pytest.raises(httpx.TimeoutException):
                await client.post("/stuck/upload", content=body())
        upstream_rss = _rss(gw.proc.pid)

        # A client that stops reading a 128 MiB answer.
        reader = socket.create_connection(("127.0.0.1", port))
        reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        reader.sendall(b"GET /bytes/134217728 HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.sleep(2.5)  # the answer is pushed at the gateway meanwhile
        client_rss = _rss(gw.proc.pid)
        reader.close()
        report = await running
        # The upload stalled; what was sent sits in socket buffers, which the kernel may grow to
        # net.ipv4.tcp_rmem's maximum (32 MiB here) on each of the two hops.
        assert sent < 128 * MiB, sent
        assert upstream_rss - baseline < 16 * MiB, (baseline, upstream_rss)
        assert client_rss - baseline < 16 * MiB, (baseline, client_rss)
        assert report.failures == [] and report.shorts_ok > 1000, report
    finally:
        assert gw.stop() == 0, gw.output()
        listener.close()
        for conn in accepted:
            conn.close()
