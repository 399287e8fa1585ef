"""HTTP/2 cleartext (h2c) through the gateway vs nginx (1 worker, ``http2`` listener) vs direct.

Run ``python -m bench.h2``. The client for every row is h2load (Debian's nghttp2-client), so
HTTP/2 and HTTP/1.1 rows are measured by the same program; the upstream for every row is the
HTTP/1.1 echo (``gateway.demo.echo``), 1 KiB responses from ``/bytes/1024``. Rows:

* ``direct h1 -> echo``: ``h2load --h1`` straight to the echo, the reference (the echo speaks
  HTTP/1.1 only, so there is no direct h2c row);
* ``nginx h2c``: nginx, 1 worker, cleartext HTTP/2 by prior knowledge, keep-alive upstream pool;
* ``gateway h2c``: the gateway's plain HTTP listener spoken to with the h2c preface (prior
  knowledge), 1 and 2 workers;
* ``gateway h1``: the same gateways through ``h2load --h1``, the HTTP/1.1 path the h2c one is
  held to per request.

Two load shapes: *unary* is ``-c32 -m1`` (32 connections, one stream each at a time) and
*multiplexed* is ``-c1 -m100`` (100 concurrent streams on one connection). HTTP/1.1 cannot
multiplex, and h2load's ``--h1 -m100`` would pipeline, which real clients don't do and which
batches syscalls; so the HTTP/1.1 rows of the multiplexed shape use the same concurrency over
connections instead, ``-c100 -m1``.

Each measurement is one ``h2load -D <duration>`` (or ``-n <requests>``) after a separate
warm-up run. req/s is h2load's ("finished in ..., N req/s"); p50/p99 come from h2load's
``--log-file`` (one line per request: start, status, microseconds to end of response), since
h2load prints only min/max/mean/sd. CPU per request is the proxy's utime+stime (from /proc,
summed over its processes) during the measured run divided by the requests h2load completed.
A row with failed/errored/timed-out requests or non-2xx statuses is flagged. Before the h2c
rows of a gateway, one connection sends the HTTP/2 preface and must get a SETTINGS frame back;
otherwise the row reports ``h2c not served`` with what came back, and the rest still run.
Everything shares this machine's cores, so compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.processes import (
    Service,
    cpu_seconds,
    start_echo,
    start_gateway,
    start_nginx_h2c,
)

PATH = "/bytes/1024"
H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # length 0, type SETTINGS, no flags
TARGET_VS_NGINX = 0.3  # gateway h2c req/s >= 0.3x nginx h2c req/s
TARGET_VS_H1 = 2.0  # gateway h2c CPU per request <= 2x gateway HTTP/1.1 CPU per request


@dataclass(frozen=True)
class Shape:
    """A load shape: connections and concurrent streams per connection, for h2c and for h1."""

    name: str
    clients: int
    streams: int
    h1_clients: int
    h1_streams: int

    def flags(self, h1: bool) -> list[str]:
        """h2load's -c/-m for this shape."""
        if h1:
            return [f"-c{self.h1_clients}", f"-m{self.h1_streams}"]
        return [f"-c{self.clients}", f"-m{self.streams}"]


SHAPES = (
    Shape("unary", clients=32, streams=1, h1_clients=32, h1_streams=1),
    Shape("multiplexed", clients=1, streams=100, h1_clients=100, h1_streams=1),
)


@dataclass
class H2loadResult:
    """What one h2load run measured."""

    protocol: str
    requests: int  # done
    succeeded: int
    failed: int  # h2load's failed: errored and timed-out requests included
    non_2xx: dict[str, int]  # {'4xx': 3, ...}, classes with a count only
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    cpu_s: float | None = None

    @property
    def cpu_us_per_request(self) -> float | None:
        """CPU microseconds the target spent per request."""
        return None if self.cpu_s is None or not self.requests else self.cpu_s / self.requests * 1e6

    def problems(self, expected_protocol: str) -> list[str]:
        """Why this run can't be taken at face value; empty when it can."""
        found = []
        if self.protocol != expected_protocol:
            found.append(f"protocol {self.protocol or '?'}, expected {expected_protocol}")
        if not self.requests:
            found.append("no request completed")
        if self.failed:
            found.append(f"{self.failed} failed")
        found += [f"{count} {status}" for status, count in self.non_2xx.items()]
        return found


@dataclass
class Target:
    """Something to load: a label, how to speak to it, the processes whose CPU to account."""

    key: str
    label: str
    port: int | None
    h1: bool
    service: Service | None = None
    error: str | None = None  # set when the target can't be measured at all

    @property
    def protocol(self) -> str:
        """The protocol h2load must report."""
        return "http/1.1" if self.h1 else "h2c"


@dataclass
class Row:
    """One target under one shape: a result, or why there is none."""

    target: Target
    shape: Shape
    result: H2loadResult | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def _percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile."""
    index = max(0, min(len(sorted_values) - 1, int(fraction * len(sorted_values) + 0.5) - 1))
    return float(sorted_values[index])


def _latencies_us(log_file: Path) -> list[int]:
    """Microseconds to end of response of every completed request in an h2load --log-file."""
    values = []
    for line in log_file.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3 and fields[1] != "-1":
            values.append(int(fields[2]))
    values.sort()
    return values


def _count(pattern: str, out: str) -> int:
    match = re.search(pattern, out)
    if match is None:
        raise RuntimeError(f"unexpected h2load output (no {pattern!r}):\n{out}")
    return int(match.group(1))


def parse_h2load(out: str, log_file: Path | None) -> H2loadResult:
    """The numbers from h2load's stdout and, if given, its per-request log."""
    finished = re.search(r"finished in [\d.]+\w*, ([\d.]+) req/s", out)
    if finished is None:
        raise RuntimeError(f"unexpected h2load output (no 'finished in'):\n{out}")
    protocol = re.search(r"Application protocol: (\S+)", out)
    non_2xx = {code: _count(rf"(\d+) {code}", out) for code in ("3xx", "4xx", "5xx")}
    latencies = _latencies_us(log_file) if log_file is not None and log_file.exists() else []
    return H2loadResult(
        protocol=protocol.group(1) if protocol else "",
        requests=_count(r"(\d+) done", out),
        succeeded=_count(r"(\d+) succeeded", out),
        failed=_count(r"(\d+) failed", out),  # errored and timed-out ones are among these
        non_2xx={code: count for code, count in non_2xx.items() if count},
        rps=float(finished.group(1)),
        p50_ms=_percentile(latencies, 0.50) / 1000 if latencies else None,
        p99_ms=_percentile(latencies, 0.99) / 1000 if latencies else None,
    )


def run_h2load(
    target: Target, shape: Shape, seconds: float | None, requests: int | None, account: bool
) -> H2loadResult:
    """h2load against the target for ``seconds`` (or ``requests``), accounting its CPU."""
    assert target.port is not None
    with tempfile.TemporaryDirectory(prefix="bench-h2load-") as tmp:
        log_file = Path(tmp, "requests.log")
        cmd = ["h2load", "-t1", *shape.flags(target.h1), f"--log-file={log_file}"]
        if target.h1:
            cmd.append("--h1")
        if seconds is not None:
            cmd.append(f"-D{seconds:g}")
            timeout = seconds + 30
        else:
            cmd.append(f"-n{requests}")
            timeout = 600.0
        cmd.append(f"http://127.0.0.1:{target.port}{PATH}")
        pids = target.service.refresh_pids() if account and target.service is not None else []
        before = cpu_seconds(pids) if pids else None
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        after = cpu_seconds(pids) if pids else None
        if proc.returncode != 0:
            stderr = proc.stderr.strip()[-300:]
            raise RuntimeError(f"h2load exited with {proc.returncode}: {stderr}")
        result = parse_h2load(proc.stdout, log_file)
    if before is not None and after is not None:
        result.cpu_s = after - before
    return result


def probe_h2c(port: int, timeout: float = 2.0) -> str | None:
    """None when 127.0.0.1:port answers the HTTP/2 preface with SETTINGS; else what went wrong."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(H2_PREFACE + EMPTY_SETTINGS)
            data = b""
            try:
                while len(data) < 9:
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    data += chunk
            except TimeoutError:
                if not data:
                    return f"no reply to the HTTP/2 preface within {timeout:g}s"
    except OSError as exc:
        return f"connection failed: {exc}"
    if len(data) >= 9 and data[3] == 0x04 and not data[4] & 0x01:
        return None
    if not data:
        return "connection closed without a reply to the HTTP/2 preface"
    if data.startswith(b"HTTP/"):
        head, _, body = data.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        detail = body.decode(errors="replace").strip()[:80]
        return f"answered the HTTP/2 preface with {status!r}" + (f" ({detail!r})" if detail else "")
    return f"answered the HTTP/2 preface with {data[:24]!r}, not a SETTINGS frame"


def measure(
    target: Target, shape: Shape, seconds: float | None, requests: int | None, warmup: float
) -> Row:
    """Warm up, then measure one row; failures become the row's error instead of raising."""
    row = Row(target, shape)
    if target.error is not None:
        row.error = target.error
        return row
    try:
        if warmup > 0:
            run_h2load(target, shape, warmup, None, account=False)  # connections, pools, caches
        row.result = run_h2load(target, shape, seconds, requests, account=True)
    except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        row.error = f"{target.label}: {exc}"
        return row
    row.notes = row.result.problems(target.protocol)
    return row


def _fmt(value: float | None, pattern: str) -> str:
    """``value`` formatted, or a ``-`` as wide as the pattern."""
    width = int(pattern.split(".")[0] or 0)
    return "-".rjust(width) if value is None else format(value, pattern)


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def _usable(row: Row | None) -> H2loadResult | None:
    """The result of a row that measured something sound."""
    if row is None or row.result is None or row.notes:
        return None
    return row.result


def start_targets(echo: Service, services: list[Service]) -> list[Target]:
    """Start nginx and the gateways; a target that can't start carries its error."""
    targets = [Target("direct", "direct h1 -> echo (reference)", echo.port, h1=True)]
    nginx = start_nginx_h2c(echo.port)
    if nginx is None:
        targets.append(Target("nginx", "nginx h2c, 1 worker", None, False, error="no nginx"))
    else:
        services.append(nginx)
        targets.append(Target("nginx", "nginx h2c, 1 worker", nginx.port, False, nginx))
    for workers in (1, 2):
        plural = "s" * (workers > 1)
        h2c = Target(f"gw{workers}-h2c", f"gateway h2c, {workers} worker{plural}", None, False)
        h1 = Target(f"gw{workers}-h1", f"gateway h1, {workers} worker{plural}", None, True)
        try:
            gateway = start_gateway(echo.port, workers)
        except RuntimeError as exc:
            h2c.error = h1.error = f"gateway x{workers}: did not start: {exc}"
        else:
            services.append(gateway)
            for target in (h2c, h1):
                target.port, target.service = gateway.port, gateway
            problem = probe_h2c(gateway.port)
            if problem is not None:
                h2c.error = f"gateway x{workers}: h2c not served: {problem}"
        targets += [h2c, h1]
    return targets


def print_table(rows: list[Row], header_line: str) -> None:
    """The table of rows, ratios against nginx h2c and against the gateway's HTTP/1.1 path."""
    by_key = {(row.shape.name, row.target.key): row for row in rows}
    print(f"\n{header_line}\n")
    header = (
        f"{'shape':12} {'target':30} {'req/s':>9} {'vs nginx':>9} {'CPU us/req':>11} "
        f"{'CPU vs h1':>10} {'p50 ms':>8} {'p99 ms':>8}  status"
    )
    print(header)
    print("-" * (len(header) + 20))
    order = {shape.name: index for index, shape in enumerate(SHAPES)}
    for row in sorted(rows, key=lambda row: order[row.shape.name]):
        name = f"{row.shape.name:12} {row.target.label:30}"
        if row.result is None:
            print(f"{name} FAILED: {row.error}")
            continue
        result = row.result
        nginx = _usable(by_key.get((row.shape.name, "nginx")))
        cpu = result.cpu_us_per_request
        vs_h1 = None
        if row.target.key.endswith("-h2c"):
            h1 = _usable(by_key.get((row.shape.name, row.target.key.replace("-h2c", "-h1"))))
            vs_h1 = _ratio(cpu, h1.cpu_us_per_request if h1 else None)
        status = "FLAGGED: " + ", ".join(row.notes) if row.notes else "ok"
        print(
            f"{name} {result.rps:9.0f} "
            f"{_fmt(_ratio(result.rps, nginx.rps if nginx else None), '9.2f')} "
            f"{_fmt(cpu, '11.1f')} {_fmt(vs_h1, '10.2f')} "
            f"{_fmt(result.p50_ms, '8.2f')} {_fmt(result.p99_ms, '8.2f')}  {status}"
        )


def print_targets(rows: list[Row]) -> None:
    """Met / missed for the gateway's h2c path, 1 worker, per shape."""
    by_key = {(row.shape.name, row.target.key): row for row in rows}
    print(
        f"\ntargets (gateway h2c, 1 worker): req/s >= {TARGET_VS_NGINX}x nginx h2c; "
        f"CPU per request <= {TARGET_VS_H1:g}x the gateway's HTTP/1.1 path (same shape)"
    )
    for shape in SHAPES:
        gateway_row = by_key[(shape.name, "gw1-h2c")]
        gateway = _usable(gateway_row)
        if gateway is None:
            reason = gateway_row.error or ", ".join(gateway_row.notes)
            print(f"  {shape.name:12} not measured: {reason}")
            continue
        nginx = _usable(by_key[(shape.name, "nginx")])
        h1 = _usable(by_key[(shape.name, "gw1-h1")])
        verdicts = []
        vs_nginx = _ratio(gateway.rps, nginx.rps if nginx else None)
        if vs_nginx is None:
            verdicts.append("vs nginx: no nginx figure")
        else:
            met = "met" if vs_nginx >= TARGET_VS_NGINX else "MISSED"
            verdicts.append(f"vs nginx {vs_nginx:.2f}x {met}")
        vs_h1 = _ratio(gateway.cpu_us_per_request, h1.cpu_us_per_request if h1 else None)
        if vs_h1 is None:
            verdicts.append("CPU vs h1: no h1 figure")
        else:
            met = "met" if vs_h1 <= TARGET_VS_H1 else "MISSED"
            verdicts.append(f"CPU vs h1 {vs_h1:.2f}x {met}")
        print(f"  {shape.name:12} " + "; ".join(verdicts))


def main(argv: list[str] | None = None) -> None:
    """Start everything, measure, print the table."""
    parser = argparse.ArgumentParser(description="h2c throughput/latency/CPU benchmark")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="seconds per measured h2load run (-D)"
    )
    parser.add_argument(
        "--requests", type=int, help="requests per measured run (-n) instead of --duration"
    )
    parser.add_argument(
        "--warmup", type=float, default=1.0, help="seconds of unmeasured h2load before each run"
    )
    args = parser.parse_args(argv)
    if shutil.which("h2load") is None:
        raise SystemExit("h2load is not installed (apt-get install nghttp2-client)")
    seconds = None if args.requests else args.duration

    echo = start_echo()
    services: list[Service] = [echo]
    rows: list[Row] = []
    try:
        targets = start_targets(echo, services)
        for target in targets:
            for shape in SHAPES:
                rows.append(measure(target, shape, seconds, args.requests, args.warmup))
    finally:
        for service in reversed(services):
            service.stop()

    bound = f"-n{args.requests}" if args.requests else f"-D{args.duration:g}s"
    unary, multiplexed = SHAPES
    print_table(
        rows,
        f"h2load -t1 {bound} after {args.warmup:g}s warm-up, {PATH}, upstream HTTP/1.1 echo; "
        f"unary -c{unary.clients} -m{unary.streams}, multiplexed -c{multiplexed.clients} "
        f"-m{multiplexed.streams} (h1 rows: -c{multiplexed.h1_clients} "
        f"-m{multiplexed.h1_streams}); CPU vs h1: gateway h2c CPU/req over gateway h1 CPU/req, "
        "same workers and shape",
    )
    print_targets(rows)


if __name__ == "__main__":
    main()
