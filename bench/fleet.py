"""The scheduling benchmark's processes: 8 simulators in one process, the gateway in front of them
under one of three policies, and the simulators' counters read over HTTP.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.processes import Service, free_port, wait_listening
from inference_ext.sim.config import SimConfig

POLICIES = ("round-robin", "random", "picker")

_GATEWAY = """\
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: bench, namespace: default}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm, namespace: default}}
spec:
  parentRefs: [{{name: bench}}]
  rules:
    - matches: [{{path: {{type: PathPrefix, value: /v1/}}}}]
      backendRefs: [{backend}]
"""

_SERVICE = """\
---
apiVersion: v1
kind: Service
metadata:
  name: vllm
  namespace: default
  annotations: {{gateway.ambient.dev/load-balancer: {policy}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {sim_port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: vllm-1
  namespace: default
  labels: {{kubernetes.io/service-name: vllm}}
addressType: IPv4
ports: [{{name: http, port: {sim_port}}}]
endpoints: [{addresses}]
"""

_POOL = """\
---
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {{name: vllm, namespace: default}}
spec:
  selector:
    matchLabels: {{app: vllm}}
  targetPorts: [{{number: {sim_port}}}]
"""

_POD = """\
---
apiVersion: v1
kind: Pod
metadata:
  name: vllm-{index}
  namespace: default
  labels: {{app: vllm}}
status:
  podIP: {address}
  conditions: [{{type: Ready, status: "True"}}]
"""


def gateway_yaml(policy: str, port: int, hosts: list[str], sim_port: int) -> str:
    """The Gateway and route for one policy: a Service with that load-balancer annotation over
    the simulators, or an InferencePool of them as Pods (the in-process picker, defaults)."""
    if policy == "picker":
        backend = "{group: inference.networking.k8s.io, kind: InferencePool, name: vllm}"
        tail = _POOL.format(sim_port=sim_port) + "".join(
            _POD.format(index=i, address=host) for i, host in enumerate(hosts)
        )
    else:
        backend = "{name: vllm, port: 80}"
        addresses = ", ".join(f'{{addresses: ["{host}"]}}' for host in hosts)
        tail = _SERVICE.format(policy=policy, sim_port=sim_port, addresses=addresses)
    return _GATEWAY.format(port=port, backend=backend) + tail


def sim_argv(config: SimConfig, replicas: int) -> list[str]:
    """``ambient sim`` with the settings of ``config``."""
    c = config
    return [
        sys.executable, "-m", "gateway.cli", "sim",
        "--listen", f"{c.host}:{c.port}", "--replicas", str(replicas),
        "--model", c.model, "--max-num-seqs", str(c.max_num_seqs),
        "--kv-blocks", str(c.kv_blocks), "--block-size", str(c.block_size),
        "--prefill-overhead-ms", str(c.prefill_overhead_ms),
        "--prefill-ms-per-token", str(c.prefill_ms_per_token),
        "--itl-ms", str(c.itl_ms), "--itl-load-factor", str(c.itl_load_factor),
        "--jitter", str(c.jitter), "--seed", str(c.seed), "--time-scale", str(c.time_scale),
        "--max-loras", str(c.max_loras),
        *(("--lora", ",".join(c.loras)) if c.loras else ()),
    ]  # fmt: skip


def start_sims(config: SimConfig, replicas: int) -> Service:
    """The replicas in one fresh process (empty KV caches), once the last one listens."""
    proc = subprocess.Popen(
        sim_argv(config, replicas), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    wait_listening(config.port, proc, host=config.replica_host(replicas - 1))
    service = Service("sim", config.port, proc)
    service.refresh_pids()
    return service


CONFIG_FILE = "gateway.yaml"  # in the gateway service's workdir (a benchmark may rewrite it)


def start_gateway(
    policy: str, hosts: list[str], sim_port: int, extra: str = ""
) -> tuple[Service, int]:
    """``ambient gateway -f`` for one policy (plus ``extra`` resources) on free ports; the
    service and its admin port."""
    port, admin = free_port(), free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench-sched-")
    config = Path(workdir.name, CONFIG_FILE)
    config.write_text(gateway_yaml(policy, port, hosts, sim_port) + extra)
    argv = [
        sys.executable, "-m", "gateway.cli", "gateway", "-f", str(config),
        "--admin", f"127.0.0.1:{admin}", "--bind-address", "127.0.0.1", "--workers", "1",
    ]  # fmt: skip
    env = dict(os.environ, OTEL_TRACES_SAMPLER="always_off")
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=workdir.name
    )
    wait_listening(port, proc)
    service = Service(f"gateway ({policy})", port, proc, workdir)
    service.refresh_pids()
    return service, admin


def admin_json(admin: int, path: str) -> Any:
    """GET a JSON admin view of the gateway."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=10) as response:
        return json.loads(response.read())


@dataclass
class Counters:
    """One simulator's vLLM counters at a moment."""

    prefix_queries: float = 0.0
    prefix_hits: float = 0.0
    requests: float = 0.0
    generated: float = 0.0
    waiting: float = 0.0
    running: float = 0.0
    kv: float = 0.0

    def minus(self, other: Counters) -> Counters:
        """The counters' growth since ``other`` (gauges as they are now)."""
        return Counters(
            self.prefix_queries - other.prefix_queries,
            self.prefix_hits - other.prefix_hits,
            self.requests - other.requests,
            self.generated - other.generated,
            self.waiting,
            self.running,
            self.kv,
        )


_NAMES = {
    b"vllm:prefix_cache_queries_total": "prefix_queries",
    b"vllm:prefix_cache_hits_total": "prefix_hits",
    b"vllm:request_success_total": "requests",
    b"vllm:generation_tokens_total": "generated",
    b"vllm:num_requests_waiting": "waiting",
    b"vllm:num_requests_running": "running",
    b"vllm:kv_cache_usage_perc": "kv",
}


def parse_counters(text: bytes) -> Counters:
    """The counters of one ``/metrics`` exposition (series of one name summed)."""
    counters = Counters()
    for line in text.split(b"\n"):
        if not line or line[0] == 35:  # "#"
            continue
        name = line.split(b"{", 1)[0].split(b" ", 1)[0]
        attr = _NAMES.get(name)
        if attr is not None:
            setattr(counters, attr, getattr(counters, attr) + float(line.rsplit(b" ", 1)[1]))
    return counters


async def read_counters(hosts: list[str], port: int) -> list[Counters]:
    """Every replica's counters now (one short connection each, concurrently)."""

    async def one(host: str) -> Counters:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /metrics HTTP/1.1\r\nhost: sim\r\nconnection: close\r\n\r\n")
        data = await reader.read(-1)
        writer.close()
        return parse_counters(data.split(b"\r\n\r\n", 1)[1])

    return list(await asyncio.gather(*(one(host) for host in hosts)))
