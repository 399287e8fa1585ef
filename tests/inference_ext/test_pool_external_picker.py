"""An InferencePool with ``endpointPickerRef``: the gateway is an ext_proc client of the named
picker — our ``ambient epp`` server over the same pool, or a scripted one — and applies the
pool's ``failureMode`` when the picker is down or slow. Real gateway, simulators and gRPC."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx
import openai

from gateway.config import load_text
from inference_ext.extproc.server import start_server
from inference_ext.pool import Pools, build_scheduler
from inference_ext.sim.server import SimServer
from tests.fixtures.extproc_peers import decision, start_fake_epp
from tests.fixtures.gateway_process import free_port as another_free_port
from tests.fixtures.inference import (
    gateway_doc,
    picker_doc,
    pod_docs,
    pool_doc,
    pool_ref,
    pools,  # noqa: F401  (fixture)
    route_doc,
)
from tests.fixtures.proxy import holder_from_yaml, wait_for
from tests.inference_ext.test_pool_routing import FAST, chat, served, sims

RETRY_RULE = "    retry: {codes: [503], attempts: 2, backoff: 1ms}\n"


def picker_service(port: int, name: str = "llama-epp") -> str:
    """The picker's Service (port 9002) and its one endpoint, 127.0.0.1:``port``."""
    return f"""
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  ports: [{{name: grpc, port: 9002, targetPort: {port}, appProtocol: kubernetes.io/h2c}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-1
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}}}]
endpoints: [{{addresses: [127.0.0.1]}}]
"""


def external_yaml(
    gateway_port: int,
    servers: Sequence[SimServer],
    picker_port: int,
    failure_mode: str = "FailClose",
    extra_pods: Sequence[str] = (),
    extra: str = "",
    rule_extra: str = "",
) -> str:
    return (
        gateway_doc(gateway_port)
        + pod_docs("llama", [*(s.address for s in servers), *extra_pods])
        + pool_doc("llama", "llama", [servers[0].port], "llama-epp", failure_mode)
        + picker_service(picker_port)
        + extra
        + route_doc(f"  - backendRefs: [{pool_ref('llama')}]\n{rule_extra}")
    )


async def test_our_epp_chooses_and_learns_each_requests_end(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(FAST, 3) as servers:
        # `ambient epp` over the same YAML: its own scheduler of the same pool, scraping.
        text = external_yaml(free_port, servers, 9002)  # the picker part is not read here
        epp_scheduler = build_scheduler(load_text(text, "pool.yaml"), "default", "llama")
        server = await start_server(epp_scheduler, "127.0.0.1:0")
        try:
            yaml = external_yaml(free_port, servers, server.port)
            await gateway_factory(holder_from_yaml(yaml))
            client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{free_port}/v1", api_key="-")
            for i in range(6):
                stream = await client.chat.completions.create(
                    model="llama-3-8b",
                    messages=[{"role": "user", "content": f"hello {i}"}],
                    stream=True,
                    max_tokens=3,
                )
                assert len([c async for c in stream if c.choices and c.choices[0].delta.content])
            await client.close()
            assert sum(served(servers)) == 6
            assert len(epp_scheduler.decisions) == 6  # the external picker chose every one
            local = pools.schedulers["default/llama"]
            assert local.passive and not local.decisions and not local.scraper.running
            # Each stream stayed open until its response ended: the picker's count is back to 0.
            await wait_for(lambda: sum(epp_scheduler.inflight.values()) == 0)
        finally:
            await server.stop(0)
            await epp_scheduler.stop()


async def test_a_picker_that_is_down_fails_closed_with_503(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    unused_port = another_free_port()
    async with sims(FAST, 2) as servers:
        yaml = external_yaml(free_port, servers, unused_port, "FailClose")
        await gateway_factory(holder_from_yaml(yaml))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as c:
            r = await c.post("/v1/chat/completions", json=chat("hi", max_tokens=1))
        assert r.status_code == 503
        assert "endpoint picker of InferencePool default/llama" in r.text
        assert "FailClose" in r.text and "UNAVAILABLE" in r.text
        assert sum(served(servers)) == 0


async def test_a_picker_that_is_down_fails_open_to_the_gateways_own_choice(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    unused_port = another_free_port()
    async with sims(FAST, 2) as servers:
        yaml = external_yaml(free_port, servers, unused_port, "FailOpen")
        await gateway_factory(holder_from_yaml(yaml))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=10) as c:
            for i in range(4):
                r = await c.post("/v1/chat/completions", json=chat(f"hi {i}", max_tokens=1))
                assert r.status_code == 200
        assert sum(served(servers)) == 4
        assert len(pools.schedulers["default/llama"].decisions) == 4


async def test_a_slow_picker_times_out_into_its_failure_mode(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async def silent(requests: AsyncIterator[Any], context: Any) -> None:
        await asyncio.Event().wait()  # never decides

    fake = await start_fake_epp(silent)
    try:
        async with sims(FAST, 2) as servers:
            extra = picker_doc("llama", pickerTimeout="200ms")
            yaml = external_yaml(free_port, servers, fake.port, "FailOpen", extra=extra)
            await gateway_factory(holder_from_yaml(yaml))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as c:
                r = await c.post("/v1/chat/completions", json=chat("hi", max_tokens=1), timeout=10)
            assert r.status_code == 200 and sum(served(servers)) == 1
            await asyncio.wait_for(fake.cancelled.wait(), 10)  # the picker's call was abandoned
    finally:
        await fake.server.stop(0)


async def test_a_retry_takes_the_pickers_next_fallback_without_asking_again(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    asked: list[str] = []
    async with sims(FAST, 1) as servers:
        port = servers[0].port

        async def first_the_dead_one(requests: AsyncIterator[Any], context: Any) -> None:
            async for message in requests:
                if message.request_body.end_of_stream or message.request_headers.end_of_stream:
                    break
            asked.append("decision")
            await context.write(decision(f"127.0.0.9:{port},127.0.0.2:{port}"))
            async for _ in requests:  # the body echo and the response phase: read to the end
                pass

        fake = await start_fake_epp(first_the_dead_one)
        try:
            yaml = external_yaml(
                free_port,
                servers,
                fake.port,
                extra_pods=["127.0.0.9"],  # a pod of the pool whose server is down
                rule_extra=RETRY_RULE,
            )
            await gateway_factory(holder_from_yaml(yaml))
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as c:
                r = await c.post("/v1/chat/completions", json=chat("hi", max_tokens=1), timeout=10)
            assert r.status_code == 200 and served(servers) == [1]
            assert asked == ["decision"]  # one stream: the retry used the fallback it named
        finally:
            await fake.server.stop(0)
