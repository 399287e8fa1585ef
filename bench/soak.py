"""Soak: the fault drills' steady load for minutes; memory, descriptors and errors over time.

Run ``python -m bench.soak`` (10 minutes; ``--minutes 2`` for a shorter run). The gateway (one
process, the bench config: every path to one echo backend) carries ``bench.load_mix``: ~190
short GETs/s plus 8 SSE streams of 40 events 50 ms apart, and a SIGHUP reload every
``--reload-every`` seconds (a fault the gateway must absorb: no request may fail for it). Every
``--sample`` seconds a row: requests and stream events so far, failures, the gateway's VmRSS,
open file descriptors and CPU. Afterwards it checks:

* RSS flat within 10% after warm-up (the first 10% of the run, at least 20 s): the largest
  sample after it against the sample that ends it;
* descriptors back to the idle baseline after the load stops (idle upstream keep-alive
  connections expire after the pool's ``idle_expiry``, 60 s, swept every 30 s: it waits up to
  100 s for them);
* no failed request or stream.

It exits 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass

import uvloop

from bench.load_mix import LoadReport, MixedLoad
from bench.processes import cpu_seconds, rss_bytes, start_echo, start_gateway

MiB = 1024 * 1024
FD_WAIT = 100.0  # seconds for idle upstream connections to expire after the load


@dataclass(frozen=True, slots=True)
class Sample:
    """One row of the table."""

    elapsed: float
    requests: int
    events: int
    failures: int
    rss: int
    fds: int
    cpu: float


def open_fds(pid: int) -> int:
    """File descriptors ``pid`` has open."""
    return len(os.listdir(f"/proc/{pid}/fd"))


async def soak(seconds: float, sample_every: float, reload_every: float) -> int:
    """Run the soak; 0 when every check passes, else 1."""
    echo = start_echo()
    gateway = start_gateway(echo.port)
    pid = gateway.proc.pid
    try:
        baseline_fds = open_fds(pid)
        load = MixedLoad(f"http://127.0.0.1:{gateway.port}")
        running = asyncio.create_task(load.run(seconds))
        started = time.monotonic()
        samples: list[Sample] = []
        reloads = 0
        next_reload = started + reload_every
        header = (
            f"{'elapsed s':>9} {'requests':>9} {'events':>8} {'failures':>8} {'RSS MiB':>8} "
            f"{'fds':>5} {'CPU s':>7}"
        )
        print(f"soak: {seconds:.0f} s of ~200 req/s (short GETs + SSE streams) through {pid}")
        print(header)
        print("-" * len(header))
        while not running.done():
            await asyncio.wait({running}, timeout=sample_every)
            now = time.monotonic()
            while reload_every > 0 and now >= next_reload and not running.done():
                os.kill(pid, signal.SIGHUP)
                reloads += 1
                next_reload += reload_every
            sample = _sample(now - started, load.report, pid)
            samples.append(sample)
            print(
                f"{sample.elapsed:9.0f} {sample.requests:9d} {sample.events:8d} "
                f"{sample.failures:8d} {sample.rss / MiB:8.1f} {sample.fds:5d} {sample.cpu:7.1f}"
            )
        report = running.result()
        fds_after, waited = await _fds_settle(pid, baseline_fds)
        return _verdict(samples, report, seconds, baseline_fds, fds_after, waited, reloads)
    finally:
        gateway.stop()
        echo.stop()


def _sample(elapsed: float, report: LoadReport, pid: int) -> Sample:
    return Sample(
        elapsed, report.requests, report.events, len(report.failures),
        rss_bytes([pid]), open_fds(pid), cpu_seconds([pid]),
    )  # fmt: skip


async def _fds_settle(pid: int, baseline: int) -> tuple[int, float]:
    """Poll until the gateway's descriptors are back to ``baseline`` (or FD_WAIT passed)."""
    started = time.monotonic()
    fds = open_fds(pid)
    while fds > baseline and time.monotonic() - started < FD_WAIT:
        await asyncio.sleep(1)
        fds = open_fds(pid)
    return fds, time.monotonic() - started


def _verdict(
    samples: list[Sample],
    report: LoadReport,
    seconds: float,
    baseline_fds: int,
    fds_after: int,
    waited: float,
    reloads: int,
) -> int:
    warmup = max(seconds * 0.1, 20.0)
    warm = [s for s in samples if s.elapsed <= warmup]
    later = [s for s in samples if s.elapsed > warmup]
    ok = True
    print()
    if warm and later:
        reference = warm[-1].rss
        peak = max(s.rss for s in later)
        growth = (peak - reference) / reference
        flat = growth <= 0.10
        ok &= flat
        print(
            f"RSS after {warmup:.0f} s warm-up: {reference / MiB:.1f} MiB, peak later "
            f"{peak / MiB:.1f} MiB ({growth:+.1%}): {'flat' if flat else 'GREW'} (limit +10%)"
        )
    else:
        print("RSS: run too short for a warm-up and a later sample")
    back = fds_after <= baseline_fds
    ok &= back
    print(
        f"file descriptors: {baseline_fds} idle before, {fds_after} after the load "
        f"({waited:.0f} s later): {'back to baseline' if back else 'LEAKED'}"
    )
    last = samples[-1] if samples else None
    cpu = f", gateway CPU {last.cpu:.0f} s" if last else ""
    print(
        f"requests: {report.shorts_ok} short GETs and {report.streams_ok} streams "
        f"({report.events} events) ok, {len(report.failures)} failed, {report.skipped} skipped; "
        f"{reloads} SIGHUP reloads{cpu}"
    )
    for failure in report.failures[:10]:
        print(f"  failed {failure.kind}: {failure.error}")
    ok &= not report.failures and report.skipped == 0
    print("soak: PASS" if ok else "soak: FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    """Parse the flags and run the soak."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--sample", type=float, default=10.0, help="seconds between table rows")
    parser.add_argument(
        "--reload-every", type=float, default=30.0, help="seconds between SIGHUPs (0: none)"
    )
    args = parser.parse_args(argv)
    return uvloop.run(soak(args.minutes * 60, args.sample, args.reload_every))


if __name__ == "__main__":
    sys.exit(main())
