"""HTTPRoute -> InferencePool -> the in-process endpoint picker -> simulated vLLM servers.

Everything real on loopback: the gateway (ListenerManager on uvloop), ``ambient sim`` replicas on
127.0.0.x, the picker scraping their ``/metrics``; clients are the ``openai`` SDK and httpx. Which
replica served a request is read from the replica's own request counter.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import replace

import httpx
import openai

from inference_ext.picker.scheduler import PoolScheduler
from inference_ext.pool import Pools
from inference_ext.sim.config import SimConfig
from inference_ext.sim.server import SimServer, start_sims
from tests.fixtures.inference import (
    gateway_doc,
    objective_doc,
    picker_doc,
    pod_docs,
    pool_doc,
    pool_ref,
    pools,  # noqa: F401  (fixture)
    route_doc,
)
from tests.fixtures.proxy import holder_from_yaml

FAST = SimConfig(
    host="127.0.0.2",
    port=0,
    time_scale=0.05,
    output_tokens=(4, 8),
    jitter=0.0,
    seed=7,
)


@contextlib.asynccontextmanager
async def sims(config: SimConfig, n: int) -> AsyncIterator[list[SimServer]]:
    servers = await start_sims(config, n)
    try:
        yield servers
    finally:
        for server in servers:
            await server.close()


def fleet_yaml(
    port: int, servers: Sequence[SimServer], pool: str = "llama", extra: str = ""
) -> str:
    """Gateway on ``port``, a Pod per replica, one pool over them, a route to it."""
    return (
        gateway_doc(port)
        + pod_docs(pool, [s.address for s in servers])
        + pool_doc(pool, pool, [servers[0].port])
        + extra
        + route_doc(f"  - backendRefs: [{pool_ref(pool)}]\n")
    )


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) for a condition the picker's next scrapes make true."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def scheduler_of(pools: Pools, name: str = "default/llama") -> PoolScheduler:  # noqa: F811
    return pools.schedulers[name]


def served(servers: Sequence[SimServer]) -> list[int]:
    return [s.requests for s in servers]


def chat(content: str, model: str = "llama-3-8b", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


@contextlib.asynccontextmanager
async def held_streams(server: SimServer, n: int, **body: object) -> AsyncIterator[None]:
    """``n`` long streaming requests straight to one replica (not through the gateway), held
    open while the block runs, then abandoned (300 tokens: seconds at ``time_scale=1``)."""
    client = httpx.AsyncClient(base_url=server.url, timeout=30)
    entered: list[contextlib.AbstractAsyncContextManager[httpx.Response]] = []
    try:
        for i in range(n):
            payload = chat(f"hold {i}", max_tokens=300, stream=True, **body)
            stream = client.stream("POST", "/v1/chat/completions", json=payload)
            response = await stream.__aenter__()
            assert response.status_code == 200
            entered.append(stream)
        yield
    finally:
        for stream in entered:
            with contextlib.suppress(Exception):
                await stream.__aexit__(None, None, None)
        await client.aclose()


# -- the openai SDK through the gateway ------------------------------------------------------------


async def test_openai_sdk_streams_through_the_pool(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(FAST, 3) as servers:
        await gateway_factory(holder_from_yaml(fleet_yaml(free_port, servers)))
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{free_port}/v1", api_key="-")
        stream = await client.chat.completions.create(
            model="llama-3-8b",
            messages=[{"role": "user", "content": "Say hello"}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=6,
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            if chunk.usage is not None:
                usage = chunk.usage
        assert text and usage is not None and usage.completion_tokens == 6
        answer = await client.chat.completions.create(
            model="llama-3-8b", messages=[{"role": "user", "content": "again"}], max_tokens=3
        )
        assert answer.model == "llama-3-8b" and answer.usage and answer.usage.completion_tokens == 3
        completion = await client.completions.create(
            model="llama-3-8b", prompt="Once upon", max_tokens=2
        )
        assert completion.choices[0].text
        await client.close()
        assert sum(served(servers)) == 3
        decisions = scheduler_of(pools).decisions
        assert len(decisions) == 3
        assert {d.chosen for d in decisions} <= {f"{s.address}:{s.port}" for s in servers}


async def test_a_body_that_is_not_json_gets_400_naming_it_and_nothing_else_breaks(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(FAST, 2) as servers:
        await gateway_factory(holder_from_yaml(fleet_yaml(free_port, servers)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as c:
            bad = await c.post("/v1/chat/completions", content=b"{not json")
            wrong = await c.post("/v1/chat/completions", json={"model": 7, "messages": []})
            good = await c.post("/v1/chat/completions", json=chat("fine", max_tokens=2))
        assert bad.status_code == 400 and "not a JSON object" in bad.text
        assert wrong.status_code == 400 and "'model' must be a string" in wrong.text
        assert good.status_code == 200 and good.json()["usage"]["completion_tokens"] == 2
        assert sum(served(servers)) == 1  # the bad ones never reached a model server


# -- the picker steers ----------------------------------------------------------------------------


async def test_requests_steer_away_from_a_loaded_server(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    config = replace(FAST, max_num_seqs=1, time_scale=1.0)
    async with sims(config, 3) as servers:
        await gateway_factory(holder_from_yaml(fleet_yaml(free_port, servers)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as c:
            await c.post("/v1/chat/completions", json=chat("warm up", max_tokens=1))
            scheduler = scheduler_of(pools)
            busy = servers[1]
            key = f"{busy.address}:{busy.port}"
            async with held_streams(busy, 4):  # 1 running, 3 waiting on the busy replica
                await eventually(lambda: scheduler.signals[key].waiting >= 3)
                before = served(servers)
                for i in range(6):
                    r = await c.post("/v1/chat/completions", json=chat(f"q{i}", max_tokens=1))
                    assert r.status_code == 200
                after = served(servers)
        assert after[1] == before[1]  # not one request to the loaded replica
        assert sum(after) - sum(before) == 6


async def test_a_shared_prefix_returns_to_the_server_that_holds_it(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(FAST, 4) as servers:
        await gateway_factory(holder_from_yaml(fleet_yaml(free_port, servers)))
        system = "You are a careful SQL assistant. " * 60  # ~2 KB shared by every turn
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as c:
            counts = []
            for turn in range(6):
                body = {
                    "model": "llama-3-8b",
                    "max_tokens": 2,
                    "messages": [
                        {"role": "system", "content": system},
                        {"role": "user", "content": f"question {turn}"},
                    ],
                }
                r = await c.post("/v1/chat/completions", json=body)
                assert r.status_code == 200
                counts.append(served(servers))
        holder = max(range(4), key=lambda i: counts[-1][i])
        assert counts[-1][holder] == 6  # every turn went to one replica
        decision = scheduler_of(pools).decisions[-1]
        block = scheduler_of(pools).view.config.block_bytes
        assert decision.matched_blocks >= len(system) // block  # the whole system prompt matched
        # The replica's own cache agrees: the later turns hit its prefix cache.
        assert servers[holder].engine.stats.prefix_hits > 0


async def test_an_adapter_goes_to_the_server_that_has_it_loaded(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    config = replace(FAST, loras=("sql-v1", "sql-v2"), max_loras=1, time_scale=1.0)
    async with sims(config, 3) as servers:
        await gateway_factory(holder_from_yaml(fleet_yaml(free_port, servers)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as c:
            await c.post("/v1/chat/completions", json=chat("warm up", max_tokens=1))
            scheduler = scheduler_of(pools)
            loaded = servers[2]
            key = f"{loaded.address}:{loaded.port}"
            async with held_streams(loaded, 1, model="sql-v1"):
                await eventually(lambda: "sql-v1" in scheduler.signals[key].lora_running)
                before = served(servers)
                for i in range(4):
                    r = await c.post(
                        "/v1/chat/completions", json=chat(f"q{i}", model="sql-v1", max_tokens=1)
                    )
                    assert r.status_code == 200 and r.json()["model"] == "sql-v1"
                after = served(servers)
        assert after[2] - before[2] == 4


# -- priority and shedding ------------------------------------------------------------------------


async def test_a_saturated_pool_sheds_sheddable_requests_and_queues_the_rest(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    config = replace(FAST, max_num_seqs=1, time_scale=1.0)
    async with sims(config, 2) as servers:
        extra = (
            objective_doc("batch", "llama", -1)
            + objective_doc("chat", "llama", 10)
            + picker_doc("llama", saturation="{queueDepthThreshold: 1}")
        )
        await gateway_factory(holder_from_yaml(fleet_yaml(free_port, servers, extra=extra)))
        scheduler = scheduler_of(pools)
        url = f"http://127.0.0.1:{free_port}"
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            await c.post("/v1/chat/completions", json=chat("warm up", max_tokens=1))
            async with contextlib.AsyncExitStack() as stack:
                for server in servers:  # one running + one waiting on each: load 1.0
                    await stack.enter_async_context(held_streams(server, 2))
                await eventually(lambda: scheduler.saturation() >= 1.0)
                shed = await c.post(
                    "/v1/chat/completions",
                    json=chat("later", max_tokens=1),
                    headers={"x-gateway-inference-objective": "batch"},
                )
                assert shed.status_code == 429
                assert "saturated" in shed.text and "default/llama" in shed.text
                waiting = asyncio.ensure_future(
                    c.post(
                        "/v1/chat/completions",
                        json=chat("now", max_tokens=1),
                        headers={"x-gateway-inference-objective": "chat"},
                    )
                )
                await eventually(lambda: len(scheduler.queue) == 1)
                assert not waiting.done()
            # The held streams are gone: the next scrapes show capacity and the queue drains.
            critical = await asyncio.wait_for(waiting, 10)
        assert critical.status_code == 200
        assert scheduler.shed == 1 and scheduler.decisions[-1].waited > 0


# -- splits and body-based routing ----------------------------------------------------------------


async def test_weights_split_traffic_across_two_pools(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    config = replace(FAST, output_tokens=(1, 1))
    async with sims(config, 2) as a, sims(replace(config, host="127.0.0.4"), 2) as b:
        yaml = (
            gateway_doc(free_port)
            + pod_docs("stable", [s.address for s in a])
            + pod_docs("canary", [s.address for s in b])
            + pool_doc("stable", "stable", [a[0].port])
            + pool_doc("canary", "canary", [b[0].port])
            + route_doc(
                f"  - backendRefs: [{pool_ref('stable', 70, port=1)}, {pool_ref('canary', 30)}]\n"
            )
        )
        await gateway_factory(holder_from_yaml(yaml))
        n = 300
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as c:
            for i in range(n):
                r = await c.post("/v1/chat/completions", json=chat(f"{i}"))
                assert r.status_code == 200
        stable = sum(served(a))
        assert stable + sum(served(b)) == n
        assert 0.6 <= stable / n <= 0.8  # 70% +- 4.5 standard deviations


BBR = """
---
apiVersion: inference.ambient.dev/v1alpha1
kind: BodyBasedRouting
metadata: {name: bbr, namespace: default}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: gw}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: llama-adapters
  namespace: default
  labels: {inference.networking.k8s.io/bbr-managed: "true"}
data:
  baseModel: llama-3-8b
  adapters: |
    - sql-v1
"""


async def test_body_based_routing_sends_each_model_to_its_pool(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    llama = replace(FAST, loras=("sql-v1",))
    qwen = replace(FAST, model="qwen-2-7b", host="127.0.0.4")
    async with sims(llama, 2) as a, sims(qwen, 2) as b:
        rules = (
            "  - matches: [{headers: [{name: X-Gateway-Base-Model-Name, value: llama-3-8b}]}]\n"
            f"    backendRefs: [{pool_ref('llama')}]\n"
            "  - matches: [{headers: [{name: X-Gateway-Model-Name, value: qwen-2-7b}]}]\n"
            f"    backendRefs: [{pool_ref('qwen')}]\n"
        )
        yaml = (
            gateway_doc(free_port)
            + pod_docs("llama", [s.address for s in a])
            + pod_docs("qwen", [s.address for s in b])
            + pool_doc("llama", "llama", [a[0].port])
            + pool_doc("qwen", "qwen", [b[0].port])
            + BBR
            + route_doc(rules)
        )
        await gateway_factory(holder_from_yaml(yaml))
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{free_port}/v1", api_key="-")
        for model in ("qwen-2-7b", "llama-3-8b", "sql-v1", "qwen-2-7b"):
            answer = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=1
            )
            assert answer.model == model
        await client.close()
        assert (sum(served(a)), sum(served(b))) == (2, 2)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as c:
            unknown = await c.post("/v1/chat/completions", json=chat("x", model="mistral"))
            broken = await c.post("/v1/chat/completions", content=b'{"model": ')
        assert unknown.status_code == 404  # no route matches that model
        assert broken.status_code == 400 and "not a JSON object" in broken.text
