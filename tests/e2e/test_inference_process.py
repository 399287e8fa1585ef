"""``ambient sim`` + ``ambient gateway -f examples/pool.yaml`` as a user runs them: the openai SDK
through the gateway to a simulated fleet, the picker's decisions on ``/plugins/inference``, the
inference metrics on ``/metrics`` (Prometheus' parser) and the pool's status in ``/routes`` and
``/config_dump`` — with two workers, so every view is gathered from both."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import openai
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.gateway_process import GatewayProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
REPLICAS = ("127.0.0.2", "127.0.0.3", "127.0.0.4")


class SimProcess:
    """``ambient sim --replicas 3`` on 127.0.0.2-4, one port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "gateway.cli", "sim",
                "--listen", f"{REPLICAS[0]}:{port}", "--replicas", str(len(REPLICAS)),
                "--lora", "sql-v1", "--time-scale", "0.05", "--seed", "3",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise AssertionError(f"ambient sim exited {self.proc.returncode}: {out}")
            try:
                last = f"http://{REPLICAS[-1]}:{self.port}/v1/models"
                if httpx.get(last, timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise AssertionError("ambient sim not ready in time")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimProcess]:
    process = SimProcess(free_port())
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def pool_yaml(tmp_path: Path, gateway_port: int, sim_port: int) -> Path:
    """The bundled example, on a free gateway port and the simulators' port."""
    docs = list(yaml.safe_load_all((ROOT / "examples" / "pool.yaml").read_text()))
    for doc in docs:
        if doc["kind"] == "Gateway":
            doc["spec"]["listeners"][0]["port"] = gateway_port
        elif doc["kind"] == "InferencePool":
            doc["spec"]["targetPorts"] = [{"number": sim_port}]
    path = tmp_path / "pool.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def samples(text: str) -> dict[str, float]:
    """Sample name + sorted labels -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def test_llm_traffic_through_two_workers_with_the_pickers_view(
    tmp_path: Path, sim: SimProcess
) -> None:
    port = free_port()
    gw = GatewayProcess([pool_yaml(tmp_path, port, sim.port)], "--workers", "2")
    try:
        gw.wait_ready(timeout=30)
        requests = 12
        for i in range(requests):
            # A new client (connection) each time, so the kernel spreads them over both workers.
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="-", max_retries=0
            )
            stream = client.chat.completions.create(
                model="sql-v1" if i % 3 == 0 else "llama-3-8b",
                messages=[{"role": "user", "content": f"question {i}"}],
                stream=True,
                stream_options={"include_usage": True},
                max_tokens=4,
                extra_headers={"x-gateway-inference-objective": "chat"},
            )
            chunks = list(stream)
            assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4
            client.close()

        view = httpx.get(f"{gw.admin}/plugins/inference", timeout=5).json()
        pools = view["pools"]
        assert {p["worker"] for p in pools} == {0, 1}
        assert {p["pool"] for p in pools} == {"default/vllm-llama"}
        assert sum(p["scheduled"] for p in pools) == requests
        decisions = [d for p in pools for d in p["decisions"]]
        assert len(decisions) == requests
        endpoints = {f"{address}:{sim.port}" for address in REPLICAS}
        assert {d["chosen"] for d in decisions} <= endpoints
        assert all(d["priority"] == 10 and set(d["scores"]) == endpoints for d in decisions)
        assert all(len(p["servers"]) == 3 for p in pools)

        deadline = time.monotonic() + 10
        while True:  # the last answer's metrics land just after its last byte
            values = samples(httpx.get(f"{gw.admin}/metrics", timeout=10).text)
            total = sum(
                v for k, v in values.items() if k.startswith("inference_objective_request_total")
            )
            if total == requests or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert total == requests
        sql = "model_name=sql-v1,target_model_name=sql-v1"
        assert values[f"inference_objective_output_tokens_sum{{{sql}}}"] == 4 * 4
        assert values["inference_pool_ready_pods{name=vllm-llama,namespace=default}"] == 3
        ttft = [
            k for k in values if k.startswith("gen_ai_server_time_to_first_token_seconds_count")
        ]
        assert sum(values[k] for k in ttft) == requests

        routes = httpx.get(f"{gw.admin}/routes", timeout=5).json()["routes"]
        (pool,) = [r for r in routes if r["kind"] == "InferencePool"]
        assert pool["valid"] and pool["name"] == "vllm-llama"
        dump = httpx.get(f"{gw.admin}/config_dump", timeout=5).json()["config"]
        (described,) = dump["inference"]["pools"]
        assert described["endpoints"] == sorted(endpoints)
        assert described["objectives"] == {"batch": -1, "chat": 10}
    finally:
        assert gw.stop() == 0, gw.output()


async def test_ambient_epp_picks_among_the_simulators_for_an_envoy_client(
    tmp_path: Path, sim: SimProcess
) -> None:
    """``ambient epp -f pool.yaml --pool vllm-llama`` as a process; the test plays Envoy over a
    raw grpcio ext_proc stream and checks the decision names a simulator it can then reach."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tests.fixtures.extproc_peers import EnvoyStream, request_body, request_headers

    listen = f"127.0.0.1:{free_port()}"
    config = pool_yaml(tmp_path, free_port(), sim.port)
    epp = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "epp", "-f", str(config), "--pool", "vllm-llama",
         "--listen", listen],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(listen) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            check = health_pb2.HealthCheckRequest(service="readiness")
            ready = await health.Check(check, wait_for_ready=True, timeout=20)
            assert ready.status == health_pb2.HealthCheckResponse.SERVING
            body = (
                b'{"model":"llama-3-8b","max_tokens":2,'
                b'"messages":[{"role":"user","content":"hello"}]}'
            )
            stream = EnvoyStream(channel)
            await stream.send(
                request_headers(("x-gateway-inference-objective", "chat")),
                request_body(body, end=True),
            )
            decision = await stream.recv()
            mutation = decision.request_headers.response.header_mutation
            headers = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
            chosen = headers["x-gateway-destination-endpoint"].split(",")
            assert len(chosen) == 3  # the pick and two fallbacks, every one a simulator
            assert {c.rsplit(":", 1)[0] for c in chosen} == set(REPLICAS)
            assert all(c.endswith(f":{sim.port}") for c in chosen)
            async with httpx.AsyncClient() as client:  # the proxy sends the request there
                answer = await client.post(f"http://{chosen[0]}/v1/chat/completions", content=body)
            assert answer.status_code == 200
            await stream.call.done_writing()
            await stream.recv_until_eof()
    finally:
        epp.terminate()
        out, _ = epp.communicate(timeout=15)
    assert epp.returncode == 0, out.decode()
