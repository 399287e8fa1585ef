"""The MCPBackend's cost: MCP ``tools/call`` straight to a FastMCP server vs through the gateway,
and a ``tools/list`` fanned out over many servers vs one.

Run ``python -m bench.mcp``. FastMCP servers (:mod:`bench.mcp_server`, uvicorn with httptools
and uvloop, JSON answers) are started, and ``ambient gateway`` serves two MCPBackends: ``/mcp``
with the first server as its one target, ``/fan`` with all of them (``--fanout``). Each way
opens one MCP session (``initialize``), then:

* ``tools/call``: ``wrk -t1`` POSTs the same ``echo`` call in the session with ``--connections``
  connections, in interleaved rounds (medians shown), to the server (``direct``) and through the
  gateway (``gateway``). Added p50/p99 are gateway minus direct; CPU per call is utime + stime
  from /proc over the calls wrk completed, of the server (direct) and of the gateway (gateway).
* ``tools/list``: one client lists sequentially (``--lists`` times) from each server directly
  and from the gateway's fan-out backend; the fan-out p50 is compared with the slowest server's,
  and the CPU one fan-out costs the servers and the gateway is shown, with the wall time the
  servers' CPU alone needs on this machine's cores (the fan-out cannot be faster). The same
  again with every server answering 20 ms later (``/remote``: tool servers across a network),
  where the servers' CPU no longer decides the fan-out's time.

On a 2-core machine wrk, the servers and the gateway share the cores: the figures compare the
ways on one machine, they are not the gateway's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.asgi import Launch, start, uvicorn_launch
from bench.mcp_server import DELAY, REMOTE
from bench.processes import Service, cpu_seconds, free_port

ROOT = Path(__file__).resolve().parent.parent
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}
CALL = (
    '{"jsonrpc":"2.0","id":1,"method":"tools/call",'
    '"params":{"name":"echo","arguments":{"text":"hi"}}}'
)
VERSION = "2025-06-18"


def config(port: int, servers: list[int]) -> str:
    """A Gateway, the session key, the MCPBackends ``one``, ``fan`` and ``remote`` (``fan``'s
    servers under ``/remote``) and their routes."""
    one = f"- {{name: s0, streamableHTTP: {{url: 'http://127.0.0.1:{servers[0]}/mcp'}}}}"

    def targets(prefix: str) -> str:
        return "\n".join(
            f"  - {{name: s{i}, streamableHTTP: {{url: 'http://127.0.0.1:{p}{prefix}/mcp'}}}}"
            for i, p in enumerate(servers)
        )

    fan, remote = targets(""), targets(REMOTE)
    return f"""\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: session-key}}
stringData: {{key: bench-session-key}}
---
apiVersion: agents.ambient.dev/v1alpha1
kind: MCPBackend
metadata: {{name: one}}
spec:
  sessionKeySecretRef: {{name: session-key, key: key}}
  targets:
  {one}
---
apiVersion: agents.ambient.dev/v1alpha1
kind: MCPBackend
metadata: {{name: fan}}
spec:
  sessionKeySecretRef: {{name: session-key, key: key}}
  targets:
{fan}
---
apiVersion: agents.ambient.dev/v1alpha1
kind: MCPBackend
metadata: {{name: remote}}
spec:
  sessionKeySecretRef: {{name: session-key, key: key}}
  targets:
{remote}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: mcp}}
spec:
  parentRefs: [{{name: bench}}]
  rules:
  - matches: [{{path: {{type: PathPrefix, value: /mcp}}}}]
    backendRefs: [{{group: agents.ambient.dev, kind: MCPBackend, name: one}}]
  - matches: [{{path: {{type: PathPrefix, value: /fan}}}}]
    backendRefs: [{{group: agents.ambient.dev, kind: MCPBackend, name: fan}}]
  - matches: [{{path: {{type: PathPrefix, value: /remote}}}}]
    backendRefs: [{{group: agents.ambient.dev, kind: MCPBackend, name: remote}}]
"""


def server_launch(i: int) -> Launch:
    launch = uvicorn_launch("bench.mcp_server:app")
    launch.env["BENCH_MCP_NAME"] = f"s{i}"
    launch.name = f"FastMCP s{i}"
    return launch


def gateway_launch(servers: list[int]) -> Launch:
    port, admin = free_port(), free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench-mcp-")
    path = Path(workdir.name, "mcp.yaml")
    path.write_text(config(port, servers))
    argv = [sys.executable, "-m", "gateway.cli", "gateway", "-f", str(path)]
    argv += ["--admin", f"127.0.0.1:{admin}", "--bind-address", "127.0.0.1"]
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath, OTEL_TRACES_SAMPLER="always_off")
    return Launch("ambient gateway (MCPBackend)", port, argv, env, workdir.name, workdir)


def open_session(url: str, tool: str = "echo") -> str:
    """``initialize`` + ``notifications/initialized`` + a first call of ``tool``; the session
    id."""
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": VERSION,
            "capabilities": {},
            "clientInfo": {"name": "bench", "version": "0"},
        },
    }
    with httpx.Client(timeout=30) as http:
        response = http.post(url, json=init, headers=HEADERS)
        response.raise_for_status()
        session = response.headers["mcp-session-id"]
        headers = HEADERS | {"mcp-session-id": session, "mcp-protocol-version": VERSION}
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        http.post(url, json=done, headers=headers).raise_for_status()
        check = http.post(url, content=CALL.replace('"echo"', f'"{tool}"'), headers=headers)
        assert check.status_code == 200 and '"hi"' in check.text, check.text
    return session


@dataclass
class Result:
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float  # the measured process's CPU per call


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, session: str, connections: int, seconds: float, measured: Service) -> Result:
    """wrk POSTing the echo call in ``session``; ``measured``'s CPU per call."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write('wrk.method = "POST"\n')
        for name, value in HEADERS.items():
            script.write(f'wrk.headers["{name}"] = "{value}"\n')
        script.write(f'wrk.headers["mcp-session-id"] = "{session}"\n')
        script.write(f'wrk.headers["mcp-protocol-version"] = "{VERSION}"\n')
        # Ids must be unique in a session (the server routes answers by id).
        body = CALL.replace('"id":1', '"id":%d')
        script.write(
            "n = 0\nrequest = function()\n  n = n + 1\n"
            f"  return wrk.format(nil, nil, nil, string.format('{body}', n))\nend\n"
        )
    pids = measured.refresh_pids()
    before = cpu_seconds(pids)
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency", "-s", script.name, url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    os.unlink(script.name)
    after = cpu_seconds(pids)
    if "Non-2xx" in out:
        raise RuntimeError(f"errors from the server:\n{out}")
    calls = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    p99 = re.search(r"99%\s+([\d.]+)(us|ms|s)", out)
    assert p50 and p99, out
    return Result(rps, _ms(*p50.groups()), _ms(*p99.groups()), (after - before) / calls * 1e6)


async def list_p50(url: str, session: str, times: int) -> float:
    """The median latency (ms) of ``tools/list`` in ``session``, one at a time."""
    headers = HEADERS | {"mcp-session-id": session, "mcp-protocol-version": VERSION}
    body = '{"jsonrpc":"2.0","id":2,"method":"tools/list"}'
    took: list[float] = []
    async with httpx.AsyncClient(timeout=30) as http:
        for _ in range(times):
            start_at = time.perf_counter()
            response = await http.post(url, content=body, headers=headers)
            took.append(time.perf_counter() - start_at)
            assert response.status_code == 200 and "tools" in response.json()["result"]
    return statistics.median(took) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mcp", description=__doc__)
    parser.add_argument("--connections", type=int, default=1, help="wrk connections")
    parser.add_argument("--seconds", type=float, default=5.0, help="each run's length")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--fanout", type=int, default=10, help="servers behind /fan")
    parser.add_argument("--lists", type=int, default=100, help="tools/list calls per way")
    args = parser.parse_args(argv)
    servers = [start(server_launch(i)) for i in range(args.fanout)]
    gateway = start(gateway_launch([s.port for s in servers]))
    try:
        direct_url = f"http://127.0.0.1:{servers[0].port}/mcp"
        gateway_url = f"http://127.0.0.1:{gateway.port}/mcp"
        ways = {
            "direct": (direct_url, open_session(direct_url), servers[0]),
            "gateway": (gateway_url, open_session(gateway_url), gateway),
        }
        results: dict[str, list[Result]] = {name: [] for name in ways}
        for url, session, measured in ways.values():  # warm up
            wrk(url, session, args.connections, 1.0, measured)
        for _ in range(args.rounds):
            for name, (url, session, measured) in ways.items():
                results[name].append(wrk(url, session, args.connections, args.seconds, measured))
        singles = []
        for server in servers:
            url = f"http://127.0.0.1:{server.port}/mcp"
            singles.append(asyncio.run(list_p50(url, open_session(url), args.lists)))
        fan_url = f"http://127.0.0.1:{gateway.port}/fan"
        fan_session = open_session(fan_url, "s0_echo")
        before = cpu_seconds(gateway.pids), sum(cpu_seconds(s.pids) for s in servers)
        fanned = asyncio.run(list_p50(fan_url, fan_session, args.lists))
        after = cpu_seconds(gateway.pids), sum(cpu_seconds(s.pids) for s in servers)
        spent = (a - b for a, b in zip(after, before, strict=True))
        gateway_ms, servers_ms = (seconds / args.lists * 1000 for seconds in spent)
        far_singles = []
        for server in servers:
            url = f"http://127.0.0.1:{server.port}{REMOTE}/mcp"
            far_singles.append(asyncio.run(list_p50(url, open_session(url), args.lists)))
        far_url = f"http://127.0.0.1:{gateway.port}{REMOTE}"
        far = asyncio.run(list_p50(far_url, open_session(far_url, "s0_echo"), args.lists))
    finally:
        gateway.stop()
        for server in servers:
            server.stop()

    def med(name: str, field: str) -> float:
        return statistics.median(getattr(r, field) for r in results[name])

    print(
        f"tools/call: wrk -t1 -c{args.connections}, {args.seconds:g} s runs, median of "
        f"{args.rounds} rounds"
    )
    print(f"{'way':<10}{'calls/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'CPU µs/call':>14}")
    for name in results:
        print(
            f"{name:<10}{med(name, 'rps'):>10,.0f}{med(name, 'p50_ms'):>9.2f}"
            f"{med(name, 'p99_ms'):>9.2f}{med(name, 'cpu_us'):>14,.0f}"
        )
    print(
        f"added by the gateway: p50 {med('gateway', 'p50_ms') - med('direct', 'p50_ms'):+.2f} ms, "
        f"p99 {med('gateway', 'p99_ms') - med('direct', 'p99_ms'):+.2f} ms; "
        f"gateway CPU per call / server CPU per call = "
        f"{med('gateway', 'cpu_us') / med('direct', 'cpu_us'):.2f}"
    )
    print(
        f"tools/list, {args.lists} sequential calls: slowest single server p50 "
        f"{max(singles):.2f} ms; fan-out over {args.fanout} p50 {fanned:.2f} ms "
        f"({fanned / max(singles):.2f}x)"
    )
    floor = servers_ms / (os.cpu_count() or 1)
    print(
        f"CPU per fan-out list: servers {servers_ms:.2f} ms, gateway {gateway_ms:.2f} ms; the "
        f"servers' CPU over {os.cpu_count()} cores alone takes {floor:.2f} ms "
        f"({floor / max(singles):.2f}x the slowest single server)"
    )
    print(
        f"tools/list from servers {DELAY * 1000:g} ms away (their answers wait on the network, "
        f"not the CPU): slowest single server p50 {max(far_singles):.2f} ms; fan-out over "
        f"{args.fanout} p50 {far:.2f} ms ({far / max(far_singles):.2f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
