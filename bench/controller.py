"""Cluster mode at scale (run: ``python -m bench.controller``).

10,000 HTTPRoutes and 1,000 Services with 10 endpoints each in the API server double
(tests/fixtures/kube_api.py, run in a child process so its memory is not counted), read by a
gateway in cluster mode in this process. Reports: time from start to ready, the memory the
gateway added, time from one route change (a PUT through the ``kubernetes`` client) to the new
behaviour seen by a client (p50/p99 over 100 changes), and compiles per second under an
EndpointSlice churn of 100 updates/s. The reference, measured in the same run on the same
objects, is a file-mode reload: YAML load, validation and compile (``gateway.reload``).
Targets (issue 12): ready <= 10 s, change applied <= 1 s p99, memory <= 500 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import resource
import statistics
import tempfile
import threading
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
import yaml
from kubernetes import client, config

from gateway.compile import compile_snapshot
from gateway.config import load_text
from gateway.controller import CONTROLLER_NAME, ClusterOptions
from gateway.demo.echo import start_echo
from gateway.server import GatewayOptions, GatewayProcess
from tests.fixtures.gateway_process import free_port

GATEWAY_API = "gateway.networking.k8s.io/v1"
Obj = dict[str, Any]


def objects(routes: int, services: int, port: int, echo_port: int) -> list[Obj]:
    """A GatewayClass, a Gateway on ``port``, Services with 10 endpoints each, and routes."""
    out: list[Obj] = [
        {
            "apiVersion": GATEWAY_API,
            "kind": "GatewayClass",
            "metadata": {"name": "ambient"},
            "spec": {"controllerName": CONTROLLER_NAME},
        },
        {
            "apiVersion": GATEWAY_API,
            "kind": "Gateway",
            "metadata": {"name": "bench", "namespace": "default"},
            "spec": {
                "gatewayClassName": "ambient",
                "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}],
            },
        },
    ]
    for s in range(services):
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc{s}", "namespace": "default"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
            }
        )
        out.append(endpoint_slice(s, echo_port, 0))
    for r in range(routes):
        out.append(route(r, f"/r{r}/", services))
    return out


def endpoint_slice(service: int, echo_port: int, generation: int) -> Obj:
    """Service ``svc<service>``'s slice: 10 loopback addresses on the echo port."""
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc{service}-a",
            "namespace": "default",
            "labels": {"kubernetes.io/service-name": f"svc{service}", "gen": str(generation)},
        },
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [f"127.{1 + e}.{service // 250}.{1 + service % 250}"]} for e in range(10)
        ],
        "ports": [{"name": "http", "port": echo_port}],
    }


def route(index: int, path: str, services: int) -> Obj:
    """HTTPRoute ``r<index>``: ``path`` (prefix) to one of the Services."""
    return {
        "apiVersion": GATEWAY_API,
        "kind": "HTTPRoute",
        "metadata": {"name": f"r{index}", "namespace": "default"},
        "spec": {
            "parentRefs": [{"name": "bench"}],
            "rules": [
                {
                    "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                    "backendRefs": [{"name": f"svc{index % services}", "port": 80}],
                }
            ],
        },
    }


def _serve_double(conn: Connection, docs: list[Obj]) -> None:
    """Child process: the API server double holding ``docs``, until told to stop."""
    from tests.fixtures.kube_api import KubeApiServer

    server = KubeApiServer(bookmark_interval=5.0).start()
    server.apply_many(docs)
    conn.send(server.url)
    conn.recv()
    server.close()


def _rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def file_reload_seconds(docs: list[Obj]) -> float:
    """The reference: one file-mode reload of the same objects (YAML load + compile)."""
    text = yaml.safe_dump_all(docs)
    start = time.perf_counter()
    compile_snapshot(load_text(text, "bench.yaml"), 1)
    return time.perf_counter() - start


def _kubeconfig(url: str, directory: Path) -> str:
    path = directory / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "b", "cluster": {"server": url}}],
                "users": [{"name": "b", "user": {"token": "bench"}}],
                "contexts": [{"name": "b", "context": {"cluster": "b", "user": "b"}}],
                "current-context": "b",
            }
        )
    )
    return str(path)


async def measure(args: argparse.Namespace, kubeconfig: str, port: int) -> dict[str, Any]:
    """Start to ready, memory, change-to-behaviour latencies, compiles/s under churn."""
    base_rss = _rss_mib()
    process = GatewayProcess(
        GatewayOptions(
            files=[],
            cluster=ClusterOptions(kubeconfig, lease_namespace="default"),
            admin=None,
            bind_address="127.0.0.1",
            report_config=False,
        )
    )
    start = time.perf_counter()
    await process.start()
    ready_s = time.perf_counter() - start
    controller = process.controller
    assert controller is not None
    # The leader's first pass writes every object's status; changes are measured after it.
    while controller.status_passes < 1 or controller._status_due.is_set():
        await asyncio.sleep(0.05)
    status_s = time.perf_counter() - start - ready_s
    rss = _rss_mib() - base_rss

    custom = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
    latencies: list[float] = []
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as http:
        for i in range(args.changes):
            index = i * (args.routes // args.changes)
            new_path = f"/changed{i}/"
            body = route(index, new_path, args.services)
            changed = time.perf_counter()
            current = await asyncio.to_thread(
                custom.get_namespaced_custom_object,
                "gateway.networking.k8s.io", "v1", "default", "httproutes", f"r{index}",
            )  # fmt: skip
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            await asyncio.to_thread(
                custom.replace_namespaced_custom_object,
                "gateway.networking.k8s.io", "v1", "default", "httproutes", f"r{index}", body,
            )  # fmt: skip
            deadline = changed + 30
            while (await http.get(f"{new_path}x")).status_code != 200:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"change {i} not applied in 30 s")
                await asyncio.sleep(0.002)
            latencies.append(time.perf_counter() - changed)

    discovery = client.CustomObjectsApi(config.new_client_from_config(config_file=kubeconfig))
    stop = threading.Event()

    def churn() -> None:
        n = 0
        while not stop.is_set():
            tick = time.perf_counter()
            service = n % args.services
            current = discovery.get_namespaced_custom_object(
                "discovery.k8s.io", "v1", "default", "endpointslices", f"svc{service}-a"
            )
            body = endpoint_slice(service, args.echo_port, n + 1)
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            discovery.replace_namespaced_custom_object(
                "discovery.k8s.io", "v1", "default", "endpointslices", f"svc{service}-a", body
            )
            n += 1
            stop.wait(max(0.0, 1 / args.churn_rate - (time.perf_counter() - tick)))

    compiles = controller.compiles
    thread = threading.Thread(target=churn, daemon=True)
    began = time.perf_counter()
    thread.start()
    await asyncio.sleep(args.churn_seconds)
    stop.set()
    thread.join()
    churn_s = time.perf_counter() - began
    compile_rate = (controller.compiles - compiles) / churn_s
    process.stop()
    await process.run_until_stopped()
    return {
        "ready_s": ready_s,
        "status_s": status_s,
        "writes": controller.writer.writes if controller.writer else 0,
        "rss_mib": rss,
        "p50": statistics.median(latencies),
        "p99": statistics.quantiles(latencies, n=100)[98] if len(latencies) > 1 else latencies[0],
        "compiles_per_s": compile_rate,
    }


def main() -> None:
    """Print the measurements and their ratios to a file-mode reload."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=1_000)
    parser.add_argument("--changes", type=int, default=100)
    parser.add_argument("--churn-rate", type=float, default=100.0, help="slice updates per s")
    parser.add_argument("--churn-seconds", type=float, default=5.0)
    args = parser.parse_args()

    async def run() -> None:
        echo = await start_echo("0.0.0.0", 0, "bench")
        args.echo_port = echo.port
        port = free_port()
        docs = objects(args.routes, args.services, port, echo.port)
        reload_s = file_reload_seconds(docs)
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        double = ctx.Process(target=_serve_double, args=(child, docs), daemon=True)
        double.start()
        url = parent.recv()
        with tempfile.TemporaryDirectory() as tmp:
            results = await measure(args, _kubeconfig(url, Path(tmp)), port)
        parent.send("stop")
        double.join(10)
        await echo.close()
        r = results
        print(f"routes: {args.routes}  services: {args.services} x 10 endpoints")
        print(f"reference: file-mode reload (YAML load + validate + compile): {reload_s:.2f} s")
        print(
            f"start to ready:        {r['ready_s']:.2f} s  ({r['ready_s'] / reload_s:.2f}x reload)"
            "  target <= 10 s"
        )
        print(f"first status pass:     {r['status_s']:.2f} s after ready ({r['writes']} writes)")
        print(f"memory added:          {r['rss_mib']:.0f} MiB  target <= 500 MiB")
        print(
            f"route change applied:  p50 {r['p50'] * 1000:.0f} ms ({r['p50'] / reload_s:.2f}x "
            f"reload)  p99 {r['p99'] * 1000:.0f} ms ({r['p99'] / reload_s:.2f}x reload)"
            "  target p99 <= 1 s"
        )
        print(
            f"compiles/s under {args.churn_rate:.0f} slice updates/s: "
            f"{r['compiles_per_s']:.1f}  (one compile per update would be {args.churn_rate:.0f})"
        )
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"peak RSS of this process: {maxrss:.0f} MiB")

    asyncio.run(run())


if __name__ == "__main__":
    main()
