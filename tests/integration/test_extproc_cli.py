"""``ambient epp``: the command, a pool served from YAML, objective priorities."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.config import load_text
from gateway.request import RequestHead
from inference_ext.extproc.cli import PoolArgs, objective_priorities, serve
from inference_ext.extproc.client import ExtProcPicker
from tests.fixtures.extproc_peers import CHAT, A
from tests.fixtures.schedulers import RoundRobinScheduler

ROOT = Path(__file__).resolve().parents[2]

POOL_YAML = """
apiVersion: inference.networking.k8s.io/v1
kind: InferencePool
metadata: {name: llama, namespace: models}
spec:
  selector: {matchLabels: {app: llama}}
  targetPorts: [{number: 8000}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: critical, namespace: models}
spec: {priority: 7, poolRef: {name: llama}}
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceObjective
metadata: {name: batch, namespace: models}
spec: {priority: -1, poolRef: {name: other-pool}}
"""


def test_objective_priorities() -> None:
    objectives = [
        {"metadata": {"name": "critical"}, "spec": {"priority": 7, "poolRef": {"name": "p"}}},
        {"metadata": {"name": "default"}, "spec": {"poolRef": {"name": "p"}}},
        {"metadata": {"name": "elsewhere"}, "spec": {"priority": 3, "poolRef": {"name": "q"}}},
    ]
    priority_of = objective_priorities(objectives, "p")
    assert [priority_of(n) for n in ("critical", "default", "elsewhere", "", "x")] == [
        7,
        0,
        0,
        0,
        0,
    ]


async def test_serve_builds_the_pools_scheduler_and_answers(free_port: int) -> None:
    resources = load_text(POOL_YAML, "pool.yaml")
    built: list[tuple[Any, str, str]] = []
    scheduler = RoundRobinScheduler([A])

    def build_scheduler(resources: Any, namespace: str, pool: str) -> RoundRobinScheduler:
        built.append((resources, namespace, pool))
        return scheduler

    stop = asyncio.Event()
    target = f"127.0.0.1:{free_port}"
    task = asyncio.create_task(
        serve(resources, PoolArgs("models", "llama", target), build_scheduler, stop)
    )
    async with grpc.aio.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service="readiness")
        ready = await health.Check(request, wait_for_ready=True, timeout=10)
        assert ready.status == health_pb2.HealthCheckResponse.SERVING
    assert built == [(resources, "models", "llama")]

    picker = ExtProcPicker(target, timeout=10)
    head = RequestHead(
        "POST", "/v1/completions", "", "gw", [("x-gateway-inference-objective", "critical")]
    )
    assert await picker.choose(head, CHAT, {str(A): A}) == [A]
    await picker.close()
    assert scheduler.scheduled[0].priority == 7
    stop.set()
    await asyncio.wait_for(task, 10)


def test_ambient_epp_is_a_command() -> None:
    environment = {k: v for k, v in os.environ.items() if k != "AMBIENT_PLUGINS"}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "epp", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=environment,
    )
    assert result.returncode == 0, result.stderr
    for flag in ("-f FILE", "--pool", "--namespace", "--listen", "--max-body"):
        assert flag in result.stdout
