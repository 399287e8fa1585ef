"""``ambient gateway --workers 2`` serving an LLMBackend: each worker makes its own provider
client and serves; /metrics sums the workers' calls. The provider is a local stand-in for the
hosted OpenAI API (tests/fixtures/llm_providers.py)."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.gateway_process import GatewayProcess, free_port
from tests.fixtures.llm_providers import StandIn, serve, stop

ROOT = Path(__file__).resolve().parents[2]


def config(port: int, url: str, keys: str = "") -> str:
    key = base64.b64encode(b"sk-provider").decode()
    return f"""
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: ambient
  listeners: [{{name: http, port: {port}, protocol: HTTP}}]
---
apiVersion: v1
kind: Secret
metadata: {{name: key}}
data: {{key: {key}}}
---
apiVersion: agents.ambient.dev/v1alpha1
kind: LLMBackend
metadata: {{name: models}}
spec:
  providers:
  - {{name: openai, type: OpenAI, url: "{url}", apiKeySecretRef: {{name: key, key: key}}}}
  models: [{{name: gpt-4o-mini, provider: openai}}]
{keys}---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: llm}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
  - backendRefs: [{{group: agents.ambient.dev, kind: LLMBackend, name: models}}]
"""


async def test_two_workers_serve_an_llm_backend(tmp_path: Path) -> None:
    stand_in = StandIn("openai")
    served = await serve(stand_in)
    port = free_port()
    path = tmp_path / "llm.yaml"
    path.write_text(config(port, stand_in.url))
    env = {"PYTHONPATH": str(ROOT)}
    gw = GatewayProcess([path], "--workers", "2", env=env)
    try:
        await asyncio.to_thread(gw.wait_ready, 30)
        n = 20
        for _ in range(n):  # a connection each: SO_REUSEPORT spreads them over the workers
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                )
            assert answer.status_code == 200, answer.text
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(f"{gw.admin}/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        (sample,) = families["ambient_llm_requests"].samples
        assert sample.value == n and sample.labels["code"] == "200"
        assert len(stand_in.requests) == n
        assert {r.headers["authorization"] for r in stand_in.requests} == {"Bearer sk-provider"}
    finally:
        code = await asyncio.to_thread(gw.stop)
        await stop(served)
    assert code == 0, gw.output()


async def test_workers_share_a_keys_budget(tmp_path: Path) -> None:
    stand_in = StandIn("openai")
    served = await serve(stand_in)
    port = free_port()
    path = tmp_path / "llm.yaml"
    keys = "  keys: [{secretRef: {name: key, key: key}, budgets: {requestsPerMinute: 5}}]\n"
    path.write_text(config(port, stand_in.url, keys))
    env = {"PYTHONPATH": str(ROOT)}
    gw = GatewayProcess([path], "--workers", "2", env=env)
    try:
        await asyncio.to_thread(gw.wait_ready, 30)
        statuses = []
        for _ in range(12):  # a connection each: both workers serve some
            async with httpx.AsyncClient(timeout=10) as http:
                answer = await http.post(
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                    headers={"authorization": "Bearer sk-provider"},
                )
            statuses.append(answer.status_code)
        # One budget for the gateway: five requests a minute in all, whichever worker serves.
        assert statuses.count(200) == 5 and statuses.count(429) == 7, statuses
    finally:
        code = await asyncio.to_thread(gw.stop)
        await stop(served)
    assert code == 0, gw.output()
