"""Ambient against sidecars, with our own parts: memory of the mesh and added latency, same run.

Run ``python -m bench.ambient_vs_sidecar [--pods 20]``. N client pods on node-a call N server
pods on node-b (loopback addresses as pod IPs; one process serves every server pod's address).
Three meshes carry the same calls, each measured against direct connections:

- **sidecar**: an ``ambient gateway`` next to every pod (2N processes); a call crosses the
  client's sidecar and the server's, two L7 hops. (Their hop is plain HTTP: no mTLS between
  sidecars, which flatters the sidecars.)
- **ambient L4**: one ``ambient ztunnel`` per node (and the CA); the call crosses both over HBONE.
- **ambient + waypoint**: the same ztunnels plus one shared waypoint (``ambient gateway --node``)
  for the L7 hop, the Services labelled ``istio.io/use-waypoint``.

Reported: total RSS of each mesh's processes, and p90/p99 added latency at a paced 1,000 req/s
(1 KiB responses) over one keep-alive connection per client pod, beside Istio's published
figures (sidecar 0.63/0.88 ms, ambient L4 0.16/0.20 ms, ambient + waypoint 0.40/0.50 ms, 70%+
less memory).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from bench.processes import cpu_seconds, descendants, free_port, rss_bytes, wait_listening
from bench.waypoint import _wait_answers, paced, percentile

REQUESTS = 1000  # per round and mesh
ROUNDS = 5  # the meshes take turns; each percentile is the median of the rounds' values
REPO = str(Path(__file__).resolve().parents[1])
WAYPOINT_IP = "127.0.62.250"
ISTIO = {
    "sidecar": (0.63, 0.88),
    "ambient L4": (0.16, 0.20),
    "ambient + waypoint": (0.40, 0.50),
}


def client_ip(i: int) -> str:
    """Client pod i's address (node-a)."""
    return f"127.0.60.{10 + i}"


def server_ip(i: int) -> str:
    """Server pod i's address (node-b)."""
    return f"127.0.61.{10 + i}"


async def _serve(addresses: list[str], port: int) -> None:
    from gateway.demo.echo import start_echo

    for address in addresses:
        await start_echo(address, port, "server")
    await asyncio.Event().wait()


def serve(argv: list[str]) -> None:
    """``serve PORT IP...``: the echo backend on every server pod address."""
    import uvloop

    uvloop.run(_serve(argv[1:], int(argv[0])))


def _doc(kind: str, name: str, **rest: Any) -> dict[str, Any]:
    api = {
        "Pod": "v1",
        "Service": "v1",
        "Namespace": "v1",
        "EndpointSlice": "discovery.k8s.io/v1",
    }.get(kind, "gateway.networking.k8s.io/v1")
    meta = {"name": name, "namespace": "default", **rest.pop("meta", {})}
    return {"apiVersion": api, "kind": kind, "metadata": meta, **rest}


def sidecar_config(port: int, target: tuple[str, int]) -> list[dict[str, Any]]:
    """One sidecar: a listener on ``port`` proxying everything to ``target``."""
    return [
        _doc("Gateway", "sidecar", spec={"gatewayClassName": "ambient",
             "listeners": [{"name": "http", "port": port, "protocol": "HTTP"}]}),
        _doc("Service", "next", spec={"ports": [{"name": "http", "port": 80,
             "targetPort": target[1]}]}),
        _doc("EndpointSlice", "next", meta={"labels": {"kubernetes.io/service-name": "next"}},
             addressType="IPv4", ports=[{"name": "http", "port": target[1]}],
             endpoints=[{"addresses": [target[0]]}]),
        _doc("HTTPRoute", "all", spec={"parentRefs": [{"name": "sidecar"}],
             "rules": [{"backendRefs": [{"name": "next", "port": 80}]}]}),
    ]  # fmt: skip


def mesh_config(pods: int, echo_port: int) -> list[dict[str, Any]]:
    """The ambient mesh: pods, a plain and a waypoint Service per server pod, the waypoint."""
    docs = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "default",
         "labels": {"istio.io/dataplane-mode": "ambient"}}},
        _doc("Pod", "waypoint-0", meta={"labels": {
             "gateway.networking.k8s.io/gateway-name": "waypoint",
             "istio.io/dataplane-mode": "none"}},
             spec={"serviceAccountName": "waypoint", "nodeName": "node-a"},
             status={"podIP": WAYPOINT_IP}),
        _doc("Gateway", "waypoint", spec={"gatewayClassName": "istio-waypoint",
             "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}),
    ]  # fmt: skip
    for i in range(pods):
        docs += [
            _doc("Pod", f"client-{i}", meta={"labels": {"app": f"client-{i}"}},
                 spec={"serviceAccountName": "client", "nodeName": "node-a"},
                 status={"podIP": client_ip(i)}),
            _doc("Pod", f"server-{i}", meta={"labels": {"app": f"server-{i}"}},
                 spec={"serviceAccountName": "server", "nodeName": "node-b"},
                 status={"podIP": server_ip(i)}),
        ]  # fmt: skip
        for prefix, labels, third in (
            ("l4", {}, 60),
            ("wp", {"istio.io/use-waypoint": "waypoint"}, 61),
        ):
            spec = {
                "clusterIP": f"10.96.{third}.{10 + i}",
                "selector": {"app": f"server-{i}"},
                "ports": [{"name": "http", "port": 80, "targetPort": echo_port}],
            }
            docs.append(_doc("Service", f"{prefix}-{i}", meta={"labels": labels}, spec=spec))
    return docs


class Run:
    """Every process of the three meshes, started in a scratch directory."""

    def __init__(self, directory: Path, pods: int) -> None:
        self.directory = directory
        self.pods = pods
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.targets: dict[str, list[tuple[str, int]]] = {}
        self.members: dict[str, list[str]] = {}

    def spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PYTHONPATH": REPO}  # bench is no installed package
        proc = subprocess.Popen([sys.executable, *args], cwd=self.directory, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        self.procs[name] = proc
        return proc

    def start(self) -> None:
        pods, d = self.pods, self.directory
        echo_port = free_port(server_ip(0))
        servers = self.spawn("servers", "-m", "bench.ambient_vs_sidecar", "serve", str(echo_port),
                             *(server_ip(i) for i in range(pods)))  # fmt: skip
        wait_listening(echo_port, servers, host=server_ip(pods - 1))
        self.targets["direct"] = [(server_ip(i), echo_port) for i in range(pods)]
        # Sidecars: the server's next to it, the client's calling it.
        out_port, in_port = free_port(client_ip(0)), free_port(server_ip(0))
        for side, ip, port, target in [
            *(("in", server_ip(i), in_port, (server_ip(i), echo_port)) for i in range(pods)),
            *(("out", client_ip(i), out_port, (server_ip(i), in_port)) for i in range(pods)),
        ]:
            config = d / f"sidecar-{side}-{ip}.yaml"
            config.write_text(yaml.safe_dump_all(sidecar_config(port, target)))
            self.spawn(f"sidecar-{side}-{ip}", "-m", "gateway.cli", "gateway", "-f", config.name,
                       "--bind-address", ip, "--admin", "off")  # fmt: skip
        self.members["sidecar"] = [n for n in self.procs if n.startswith("sidecar")]
        self.targets["sidecar"] = [(client_ip(i), out_port) for i in range(pods)]
        # Ambient: CA, two ztunnels (a forward per Service), one waypoint.
        (d / "mesh.yaml").write_text(yaml.safe_dump_all(mesh_config(pods, echo_port)))
        ca, hbone = free_port(), free_port(client_ip(0))
        self.spawn("ca", "-m", "gateway.cli", "ca", "-f", "mesh.yaml", "--state-dir", "ca",
                   "--listen", f"127.0.0.1:{ca}")  # fmt: skip
        deadline = time.monotonic() + 60
        while not (d / "ca" / "tokens" / "node-b.token").exists():
            if time.monotonic() > deadline:
                raise RuntimeError("the CA did not start")
            time.sleep(0.05)
        common = ["-f", "mesh.yaml", "--ca", f"127.0.0.1:{ca}", "--hbone-port", str(hbone)]
        forwards: dict[str, list[tuple[str, int]]] = {"l4": [], "wp": []}
        args = []
        for prefix, found in forwards.items():
            for i in range(pods):
                port = free_port()
                found.append(("127.0.0.1", port))
                args += ["--forward", f"{port}={prefix}-{i}.default:80"]
        for node, extra in (("node-b", []), ("node-a", args)):
            self.spawn(f"ztunnel-{node}", "-m", "gateway.cli", "ztunnel", "--node", node,
                       *common, *extra, "--admin", f"127.0.0.1:{free_port()}",
                       "--metrics", f"127.0.0.1:{free_port()}",
                       "--ready", f"127.0.0.1:{free_port()}")  # fmt: skip
        self.spawn("waypoint", "-m", "gateway.cli", "gateway", *common, "--node", "node-a",
                   "--admin", "off")  # fmt: skip
        self.members["ambient L4"] = ["ca", "ztunnel-node-a", "ztunnel-node-b"]
        self.members["ambient + waypoint"] = [*self.members["ambient L4"], "waypoint"]
        self.targets["ambient L4"] = forwards["l4"]
        self.targets["ambient + waypoint"] = forwards["wp"]

    def settle(self, timeout: float = 120.0) -> None:
        """Wait until the processes are idle (40 sidecars finish starting after they listen):
        less than 5% of a core over a second, or ``timeout``."""
        pids = [p for proc in self.procs.values() for p in descendants(proc.pid)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            before = cpu_seconds(pids)
            time.sleep(1.0)
            if cpu_seconds(pids) - before < 0.05:
                return

    def rss(self, mode: str) -> int:
        """Resident memory of a mesh's processes."""
        return rss_bytes([p for n in self.members[mode] for p in descendants(self.procs[n].pid)])

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


class _Paths:
    """What ``bench.waypoint._wait_answers`` needs: named paths and the processes."""

    def __init__(self, run: Run) -> None:
        self.paths = {
            f"{mode} {i}": t for mode, ts in run.targets.items() for i, t in enumerate(ts)
        }
        self.procs = run.procs


def main(argv: list[str] | None = None) -> int:
    """Start the three meshes, load each in turn, print the table."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["serve"]:
        serve(argv[1:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20, help="client pods (and as many servers)")
    args = parser.parse_args(argv)
    if not 1 <= args.pods <= 200:
        parser.error("--pods must be between 1 and 200")
    results: dict[str, tuple[float, float]] = {}
    memory: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ambient-") as directory:
        run = Run(Path(directory), args.pods)
        try:
            run.start()
            asyncio.run(_wait_answers(_Paths(run)))  # type: ignore[arg-type]
            run.settle()
            for targets in run.targets.values():
                asyncio.run(paced(targets, REQUESTS // 4))  # warm-up
            rounds: dict[str, list[tuple[float, float]]] = {mode: [] for mode in run.targets}
            for _ in range(ROUNDS):
                for mode, targets in run.targets.items():
                    latencies = asyncio.run(paced(targets, REQUESTS))
                    rounds[mode].append((percentile(latencies, 0.9), percentile(latencies, 0.99)))
            for mode, values in rounds.items():
                results[mode] = (
                    statistics.median(v[0] for v in values),
                    statistics.median(v[1] for v in values),
                )
                if mode != "direct":
                    memory[mode] = run.rss(mode)
        finally:
            run.stop()
    _report(args.pods, results, memory, {m: len(run.members[m]) for m in memory})
    return 0


def _report(
    pods: int,
    results: dict[str, tuple[float, float]],
    memory: dict[str, int],
    processes: dict[str, int],
) -> None:
    direct = results["direct"]
    print(f"{pods} client pods -> {pods} server pods, 1 KiB responses, 1,000 req/s paced; "
          f"{ROUNDS} rounds of {REQUESTS} requests per mesh, taking turns (median of the rounds' "
          f"percentiles); added = p(mesh) - p(direct)\n")  # fmt: skip
    print(f"direct: p90 {direct[0]:.3f} ms, p99 {direct[1]:.3f} ms\n")
    print(f"{'mesh':20} {'procs':>5} {'memory MiB':>10} {'p90 added':>10} {'p99 added':>10}"
          f"   {'Istio p90/p99 added':>20}")  # fmt: skip
    sidecar_memory = memory["sidecar"]
    for mode, (p90, p99) in results.items():
        if mode == "direct":
            continue
        istio = ISTIO[mode]
        print(f"{mode:20} {processes[mode]:5d} {memory[mode] / 2**20:10.1f} "
              f"{p90 - direct[0]:10.3f} {p99 - direct[1]:10.3f}   "
              f"{istio[0]:>12.2f} / {istio[1]:.2f}")  # fmt: skip
    print()
    for mode in ("ambient L4", "ambient + waypoint"):
        saved = 1 - memory[mode] / sidecar_memory
        print(f"{mode}: {saved:.0%} less memory than sidecars (Istio: 70%+ less)")


if __name__ == "__main__":
    raise SystemExit(main())
