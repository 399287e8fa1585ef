"""Answers through an HTTPRoute rule whose backendRef weights are overridden (a route-rule
rollout) are version samples of the backendRef that served them; other rules' answers are not.
Simulators on 127.0.0.x, the ``openai`` SDK through the gateway, two pools over them."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace

import openai

from gateway.route_weights import ROUTE_WEIGHTS
from inference_ext.pool import Pools
from inference_ext.rewrite import RewriteState, VersionSample
from tests.fixtures.inference import (
    gateway_doc,
    pod_docs,
    pool_doc,
    pool_ref,
    pools,  # noqa: F401  (fixture)
    rewrite_state,  # noqa: F401  (fixture)
    route_doc,
)
from tests.fixtures.proxy import holder_from_yaml, wait_for
from tests.inference_ext.test_pool_routing import FAST, sims

LLAMA = replace(FAST, model="llama")
RULE = ("default/llm-route", "versions")
POOLS = ("llama-v1-pool", "llama-v2-pool")


async def ask(client: openai.AsyncOpenAI, n: int) -> None:
    for i in range(n):
        stream = await client.chat.completions.create(
            model="llama",
            messages=[{"role": "user", "content": f"q{i}"}],
            max_tokens=3,
            stream=True,
            stream_options={"include_usage": True},
        )
        async for _ in stream:
            pass


async def test_only_a_driven_rules_answers_are_samples_of_their_backend_ref(
    pools: Pools,  # noqa: F811
    rewrite_state: RewriteState,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    got: list[VersionSample] = []
    rewrite_state.observers.append(got.append)
    try:
        async with sims(LLAMA, 2) as servers:
            refs = ", ".join(pool_ref(pool, weight=1) for pool in POOLS)
            yaml = (
                gateway_doc(free_port)
                + pod_docs("llama", [s.address for s in servers])
                + "".join(pool_doc(pool, "llama", [servers[0].port]) for pool in POOLS)
                + route_doc(f"  - name: versions\n    backendRefs: [{refs}]\n", name="llm-route")
            )
            await gateway_factory(holder_from_yaml(yaml))
            client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{free_port}/v1", api_key="-")
            await ask(client, 4)  # the config's own weights: nobody drives the rule
            assert got == []
            ROUTE_WEIGHTS.set(*RULE, {"llama-v1-pool": 1, "llama-v2-pool": 3})
            await ask(client, 8)
            await wait_for(lambda: len(got) == 8)
            ROUTE_WEIGHTS.set(*RULE, None)
            await ask(client, 4)
            await client.close()
    finally:
        ROUTE_WEIGHTS.set(*RULE, None)
        rewrite_state.observers.remove(got.append)
    assert len(got) == 8
    assert Counter(s.target_model for s in got) == {"llama-v1-pool": 2, "llama-v2-pool": 6}
    assert {(s.rewrite, s.incoming_model, s.status) for s in got} == {
        ("HTTPRoute default/llm-route/versions", "", 200)
    }
    assert all(s.pool == f"default/{s.target_model}" for s in got)
    assert all(s.ttft is not None and s.output_tokens == 3 for s in got)
