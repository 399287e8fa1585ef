"""Proxy throughput and latency: direct vs ambient gateway (1 and 2 workers) vs nginx (1 worker).

Run ``python -m bench.proxy``. Same echo upstream for all, 1 KiB responses, ``wrk -t1 -c32``,
then ``wrk -t1 -c1`` for the latency a hop adds at concurrency 1. CPU per request is the proxy's
utime+stime (from /proc, summed over its processes) divided by the requests wrk completed.
Everything shares this machine's cores, so compare ratios measured in the same run; the run
is repeated in interleaved rounds (``--rounds``, default 3) and the table shows medians. The
"floor" row is ``bench.floor_proxy``, a minimal uvloop + httptools proxy with no routing,
rewriting or telemetry: what any Python proxy of this design pays on this machine.
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
from dataclasses import dataclass

from bench.processes import (
    Service,
    cpu_seconds,
    start_echo,
    start_floor,
    start_gateway,
    start_nginx,
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


def run_wrk(
    port: int, connections: int, seconds: float, target: Service | None, path: str = PATH
) -> WrkResult:
    """wrk against 127.0.0.1:port``path``, accounting the CPU of ``target`` during the run."""
    pids = target.refresh_pids() if target is not None else []
    before = cpu_seconds(pids) if pids else None
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--latency",
            f"http://127.0.0.1:{port}{path}",
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


def median_result(runs: list[WrkResult]) -> WrkResult:
    """Each figure's median over the rounds (CPU per request through requests and cpu_s)."""

    def mid(values: list[float]) -> float:
        return statistics.median(values)

    cpu = [r.cpu_us_per_request for r in runs]
    cpu_us = mid([c for c in cpu if c is not None]) if all(c is not None for c in cpu) else None
    requests = int(mid([r.requests for r in runs]))
    return WrkResult(
        requests=requests,
        rps=mid([r.rps for r in runs]),
        p50_ms=mid([r.p50_ms for r in runs]),
        p99_ms=mid([r.p99_ms for r in runs]),
        cpu_s=None if cpu_us is None else cpu_us * requests / 1e6,
    )


def fmt_or_dash(value: float | None, pattern: str) -> str:
    return "-" if value is None else format(value, pattern)


def main(argv: list[str] | None = None) -> None:
    """Start everything, measure, print the table."""
    parser = argparse.ArgumentParser(description="proxy throughput/latency benchmark")
    parser.add_argument("--seconds", type=float, default=3.0, help="wrk duration at -c32")
    parser.add_argument("--latency-seconds", type=float, default=2.0, help="wrk duration at -c1")
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds over every target, interleaved; the table shows each figure's median",
    )
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

        # Rounds interleave the targets, so a burst of noise on a shared VM lands on one round
        # of each rather than on every run of one target; medians are reported.
        loaded_runs: dict[str, list[WrkResult]] = {name: [] for name, _, _ in targets}
        single_runs: dict[str, list[WrkResult]] = {name: [] for name, _, _ in targets}
        for _ in range(max(1, args.rounds)):
            for name, service, port in targets:
                run_wrk(port, 32, 1, None)  # warm up: connections, pools, caches
                loaded_runs[name].append(run_wrk(port, 32, args.seconds, service))
                single_runs[name].append(run_wrk(port, 1, args.latency_seconds, None))
    finally:
        for service in reversed(services):
            service.stop()
    loaded = {name: median_result(runs) for name, runs in loaded_runs.items()}
    single = {name: median_result(runs) for name, runs in single_runs.items()}

    base = loaded.get("nginx, 1 worker")
    floor_cpu = loaded["floor: minimal py proxy"].cpu_us_per_request
    direct_p50 = single["direct"].p50_ms
    print(
        f"\nwrk -t1 -c32 -d{args.seconds:g}s, {PATH}; "
        f"added p50 from wrk -t1 -c1 -d{args.latency_seconds:g}s; "
        f"median of {max(1, args.rounds)} interleaved rounds\n"
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
            f"{fmt_or_dash(result.rps / base.rps if base else None, '9.2f')} "
            f"{result.p50_ms:8.2f} {result.p99_ms:8.2f} {fmt_or_dash(cpu, '11.1f')} "
            f"{fmt_or_dash(cpu / base_cpu if cpu and base_cpu else None, '13.2f')} "
            f"{fmt_or_dash(cpu / floor_cpu if cpu and floor_cpu else None, '13.2f')} "
            f"{latency.p50_ms * 1000:10.0f} "
            f"{'-' if name == 'direct' else format((latency.p50_ms - direct_p50) * 1000, '+13.0f')}"
        )
    nginx_runs = loaded_runs.get("nginx, 1 worker")
    if nginx_runs:
        print("\nper round (req/s vs nginx; CPU us/req):")
        for name, _, _ in targets[1:]:
            rounds = zip(loaded_runs[name], nginx_runs, strict=True)
            cells = [
                f"{run.rps / ref.rps:.2f}x; {fmt_or_dash(run.cpu_us_per_request, '.1f')}"
                for run, ref in rounds
            ]
            print(f"  {name:28} " + "   ".join(cells))
    print(
        "\ntargets: gateway >= 0.5x nginx req/s; <= 30 us CPU per request; "
        "<= +100 us added p50 at c1"
    )


if __name__ == "__main__":
    main()
