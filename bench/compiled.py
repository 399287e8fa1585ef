"""Would compiling the request path to C pay? The gateway as shipped vs its hot modules via mypyc.

Run ``python -m bench.compiled``. It copies ``gateway/`` to a temporary directory, compiles the
modules every proxied HTTP/1.1 request runs through with mypyc (shipped with mypy; needs a C
compiler and Python's headers), and starts two gateways on the same config and echo upstream:
one importing this tree, one importing the compiled copy (checked in its memory map). Interleaved
rounds of ``wrk -t1 -c32`` (req/s, CPU per request from /proc) and ``wrk -t1 -c1`` (p50) follow;
the table shows medians and the compiled build's ratio to the pure-Python one. This VM's noise
moves those by up to 2x between rounds; ``--instructions`` adds callgrind's count of user-space
instructions per request for both builds (see bench.instructions), which noise does not move.

This is the measurement behind not shipping compiled modules: see "Speed" in
docs/architecture.md. ``observability/tracing.py`` is left out: mypyc turns the class-level
``span = None`` default of its slotted ``Propagation`` into an unset attribute, and every
unsampled request would fail on it.
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from bench import instructions
from bench.processes import Service, start_echo, start_gateway
from bench.proxy import WrkResult, fmt_or_dash, median_result, run_wrk

REPO = Path(__file__).resolve().parent.parent
# What one proxied HTTP/1.1 request runs through: connection, the exchange and its stages (route,
# attempt, relay), upstream, head rewriting, pool, routing, weighted choice, load balancing,
# metrics.
HOT_MODULES = (
    "gateway/proxy/downstream.py",
    "gateway/proxy/exchange.py",
    "gateway/proxy/route_stage.py",
    "gateway/proxy/endpoint_choice.py",
    "gateway/proxy/body_stage.py",
    "gateway/proxy/upstream_attempt.py",
    "gateway/proxy/response_relay.py",
    "gateway/proxy/upstream.py",
    "gateway/proxy/headers.py",
    "gateway/proxy/pool.py",
    "gateway/request.py",
    "gateway/routing/router.py",
    "gateway/snapshot.py",
    "gateway/observability/metrics.py",
    "gateway/observability/record.py",
    "gateway/lb/balancer.py",
    "gateway/lb/least_request.py",
    "gateway/backends/service.py",
)

# Classes the data path makes with ``cls.__new__(cls)`` and then fills (no __init__ frame through
# type.__call__, see their modules). A mypyc-native class's __new__ runs its __init__, so the
# compiled copy builds these as non-native classes (their methods are still compiled).
ALLOCATED_WITHOUT_INIT = {
    "gateway/proxy/exchange.py": ("Exchange",),
    "gateway/proxy/upstream_attempt.py": ("UpstreamAttempt",),
    "gateway/request.py": ("RequestHead",),
    "gateway/observability/record.py": ("RequestRecord",),
}


def _non_native(tree: Path) -> None:
    """Mark ALLOCATED_WITHOUT_INIT non-native in the copy (the repository is left as it is)."""
    for module, classes in ALLOCATED_WITHOUT_INIT.items():
        path = tree / module
        text = path.read_text()
        for name in classes:
            text = text.replace(
                f"\nclass {name}", f"\n@mypyc_attr(native_class=False)\nclass {name}", 1
            )
        text = text.replace(
            "from __future__ import annotations\n",
            "from __future__ import annotations\n\nfrom mypy_extensions import mypyc_attr\n",
            1,
        )
        path.write_text(text)


def compile_copy(into: Path) -> None:
    """Copy the package and build HOT_MODULES in place with mypyc; exit with its output if not."""
    if importlib.util.find_spec("mypyc") is None:
        raise SystemExit("mypyc is not installed (it ships with mypy: pip install mypy)")
    if importlib.util.find_spec("setuptools") is None:
        raise SystemExit("mypyc builds with setuptools: pip install setuptools")
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        raise SystemExit("no C compiler for mypyc (apt-get install gcc)")
    if not Path(sysconfig.get_paths()["include"], "Python.h").exists():
        raise SystemExit("Python's C headers are missing (apt-get install python3-dev)")
    shutil.copytree(REPO / "gateway", into / "gateway", ignore=shutil.ignore_patterns("*.so"))
    shutil.copy(REPO / "pyproject.toml", into)  # mypy's settings
    _non_native(into)
    print(f"compiling {len(HOT_MODULES)} modules with mypyc (a minute or two) ...", flush=True)
    done = subprocess.run(
        [sys.executable, "-m", "mypyc", *HOT_MODULES],
        cwd=into,
        capture_output=True,
        text=True,
        timeout=900,
    )
    built = [m for m in HOT_MODULES if list((into / m).parent.glob(Path(m).stem + ".*.so"))]
    if done.returncode != 0 or len(built) != len(HOT_MODULES):
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise SystemExit(f"mypyc failed (built {len(built)} of {len(HOT_MODULES)}):\n{tail}")


def loads_compiled(service: Service, tree: Path) -> bool:
    """Whether the gateway process mapped a shared object from the compiled tree."""
    prefix = str(tree / "gateway")
    for line in Path(f"/proc/{service.proc.pid}/maps").read_text().splitlines():
        path = line.split()[-1]
        if path.startswith(prefix) and path.endswith(".so"):
            return True
    return False


def main(argv: list[str] | None = None) -> None:
    """Compile, start both gateways, measure in interleaved rounds, print the table."""
    parser = argparse.ArgumentParser(description="pure-Python vs mypyc-compiled request path")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians shown)")
    parser.add_argument("--seconds", type=float, default=3.0, help="wrk duration at -c32")
    parser.add_argument("--latency-seconds", type=float, default=2.0, help="wrk duration at -c1")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count user-space instructions per request of both builds (valgrind)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    if args.instructions:
        instructions.require_valgrind()
    counted: dict[str, float] = {}

    with tempfile.TemporaryDirectory(prefix="bench-mypyc-") as tmp:
        tree = Path(tmp)
        compile_copy(tree)
        echo = start_echo()
        services = [echo]
        try:
            pure = start_gateway(echo.port, pythonpath=str(REPO))
            services.append(pure)
            compiled = start_gateway(echo.port, pythonpath=str(tree))
            services.append(compiled)
            if not loads_compiled(compiled, tree) or loads_compiled(pure, tree):
                raise SystemExit("the gateways did not import the builds they were given")
            targets = [("pure Python (as shipped)", pure), ("mypyc-compiled hot path", compiled)]
            loaded: dict[str, list[WrkResult]] = {name: [] for name, _ in targets}
            single: dict[str, list[WrkResult]] = {name: [] for name, _ in targets}
            for round_ in range(max(1, args.rounds)):
                # Alternate the order too, so neither build always runs right after the other.
                for name, service in targets if round_ % 2 == 0 else targets[::-1]:
                    run_wrk(service.port, 32, 1, None)  # warm up
                    loaded[name].append(run_wrk(service.port, 32, args.seconds, service))
                    single[name].append(run_wrk(service.port, 1, args.latency_seconds, None))
            pure.stop()
            compiled.stop()
            if args.instructions:
                print("counting instructions under callgrind (a few minutes) ...", flush=True)
                for (name, _), path in zip(targets, (str(REPO), str(tree)), strict=True):
                    counted[name] = instructions.count_gateway(
                        echo.port, requests=300, connections=4, pythonpath=path
                    )
        finally:
            for service in reversed(services):
                service.stop()

    medians = {name: median_result(runs) for name, runs in loaded.items()}
    p50s = {name: statistics.median(r.p50_ms for r in runs) * 1000 for name, runs in single.items()}
    ref_name = targets[0][0]
    ref, ref_p50 = medians[ref_name], p50s[ref_name]
    print(
        f"\nwrk -t1 -c32 -d{args.seconds:g}s and -c1 -d{args.latency_seconds:g}s, "
        f"{max(1, args.rounds)} interleaved rounds, medians; ratios against pure Python\n"
    )
    header = (
        f"{'gateway build':26} {'req/s':>8} {'ratio':>6} {'CPU us/req':>11} {'ratio':>6} "
        f"{'p50 c1 us':>10} {'ratio':>6}"
    )
    print(header)
    print("-" * len(header))
    for name, _ in targets:
        result, p50 = medians[name], p50s[name]
        cpu, ref_cpu = result.cpu_us_per_request, ref.cpu_us_per_request
        print(
            f"{name:26} {result.rps:8.0f} {result.rps / ref.rps:6.2f} "
            f"{cpu or 0:11.1f} {(cpu or 0) / (ref_cpu or 1):6.2f} {p50:10.0f} {p50 / ref_p50:6.2f}"
        )
    if counted:
        ref_count = counted[ref_name]
        print("\nuser-space instructions per request (callgrind, 1,200 keep-alive GETs):")
        for name, _ in targets:
            print(f"  {name:26} {counted[name]:9,.0f}  {counted[name] / ref_count:5.2f}")
    print("\nper round, CPU us/req (pure -> compiled):")
    rounds = zip(loaded[targets[0][0]], loaded[targets[1][0]], strict=True)
    print(
        "  "
        + "   ".join(
            f"{fmt_or_dash(a.cpu_us_per_request, '.1f')} -> "
            f"{fmt_or_dash(b.cpu_us_per_request, '.1f')}"
            for a, b in rounds
        )
    )


if __name__ == "__main__":
    main()
