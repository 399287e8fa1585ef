"""Proxy throughput and latency: direct vs ambient gateway (1 and 2 workers) vs nginx (1 worker).

Run ``python -m bench.proxy``. Same echo upstream for all, 1 KiB responses, ``wrk -t1 -c32``,
then ``wrk -t1 -c1`` for the latency a hop adds at concurrency 1. CPU per request is the proxy's
utime+stime (from /proc, summed over its processes) divided by the requests wrk completed.
Everything shares this machine's cores, so compare ratios measured in the same run. The
"floor" row is ``bench.floor_proxy``, a minimal uvloop + httptools proxy with no routing,
rewriting or telemetry: what any Python proxy of this design pays on this machine.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from bench.processes import (
    Service,
    cpu_seconds,
    free_port,
    start_echo,
    start_gateway,
    start_nginx,
    wait_listening,
)

PATH = "/bytes/1024"


@dataclass
class WrkResult:
    """What one wrk run measured."""

    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_s: float | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        """CPU microseconds the target spent per request."""
        return None if self.cpu_s is None or not self.requests else self.cpu_s / self.requests * 1e6


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def run_wrk(port: int, connections: int, seconds: float, target: Service | None) -> WrkResult:
    """wrk against 127.0.0.1:port, accounting the CPU of ``target`` during the run."""
    pids = target.refresh_pids() if target is not None else []
    before = cpu_seconds(pids) if pids else None
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            f"http://127.0.0.1:{port}{PATH}",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    after = cpu_seconds(pids) if pids else None
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p50 and p99, out
    return WrkResult(
        requests,
        rps,
        _ms(*p50.groups()),
        _ms(*p99.groups()),
        None if before is None or after is None else after - before,
    )


def start_floor(echo_port: int) -> Service:
    """``bench.floor_proxy``: the minimal uvloop + httptools proxy, the floor for this design."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor_proxy", str(port), str(echo_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_listening(port, proc)
    service = Service("floor proxy", port, proc)
    service.refresh_pids()
    return service


def _fmt(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def main(argv: list[str] | None = None) -> None:
    """Start everything, measure, print the table."""
    parser = argparse.ArgumentParser(description="proxy throughput/latency benchmark")
    parser.add_argument("--seconds", type=float, default=5.0, help="wrk duration at -c32")
    parser.add_argument("--latency-seconds", type=float, default=3.0, help="wrk duration at -c1")
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")

    echo = start_echo()
    services: list[Service] = [echo]
    try:
        targets: list[tuple[str, Service | None, int]] = [("direct", None, echo.port)]
        nginx = start_nginx(echo.port)
        if nginx is not None:
            services.append(nginx)
            targets.append(("nginx, 1 worker", nginx, nginx.port))
        floor = start_floor(echo.port)
        services.append(floor)
        targets.append(("floor: minimal py proxy", floor, floor.port))
        for workers in (1, 2):
            gateway = start_gateway(echo.port, workers)
            services.append(gateway)
            targets.append(
                (f"ambient gateway, {workers} worker{'s' * (workers > 1)}", gateway, gateway.port)
            )

        loaded: dict[str, WrkResult] = {}
        single: dict[str, WrkResult] = {}
        for name, service, port in targets:
            run_wrk(port, 32, 1, None)  # warm up: connections, pools, caches
            loaded[name] = run_wrk(port, 32, args.seconds, service)
            single[name] = run_wrk(port, 1, args.latency_seconds, None)
    finally:
        for service in reversed(services):
            service.stop()

    base = loaded.get("nginx, 1 worker")
    floor_cpu = loaded["floor: minimal py proxy"].cpu_us_per_request
    direct_p50 = single["direct"].p50_ms
    print(
        f"\nwrk -t1 -c32 -d{args.seconds:g}s, {PATH}; "
        f"added p50 from wrk -t1 -c1 -d{args.latency_seconds:g}s\n"
    )
    header = (
        f"{'target':28} {'req/s':>9} {'vs nginx':>9} {'p50 ms':>8} {'p99 ms':>8} "
        f"{'CPU us/req':>11} {'CPU vs nginx':>13} {'CPU vs floor':>13} {'p50 c1 us':>10} "
        f"{'added p50 us':>13}"
    )
    print(header)
    print("-" * len(header))
    for name, _, _ in targets:
        result, latency = loaded[name], single[name]
        cpu = result.cpu_us_per_request
        base_cpu = base.cpu_us_per_request if base else None
        print(
            f"{name:28} {result.rps:9.0f} "
            f"{_fmt(result.rps / base.rps if base else None, '9.2f')} "
            f"{result.p50_ms:8.2f} {result.p99_ms:8.2f} {_fmt(cpu, '11.1f')} "
            f"{_fmt(cpu / base_cpu if cpu and base_cpu else None, '13.2f')} "
            f"{_fmt(cpu / floor_cpu if cpu and floor_cpu else None, '13.2f')} "
            f"{latency.p50_ms * 1000:10.0f} "
            f"{'-' if name == 'direct' else format((latency.p50_ms - direct_p50) * 1000, '+13.0f')}"
        )
    print(
        "\ntargets: gateway >= 0.5x nginx req/s; <= 30 us CPU per request; "
        "<= +100 us added p50 at c1"
    )


if __name__ == "__main__":
    main()
