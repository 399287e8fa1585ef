"""A provider behind an InferencePool (``backendRef``): the pool's endpoint picker chooses one of
its model servers (``ambient sim`` replicas, vLLM stand-ins) for each call, through the OpenAI
and the Anthropic SDK (translated), streaming and not."""

from __future__ import annotations

import anthropic
import openai

from gateway.plugins import load_plugins
from inference_ext.sim.server import SimServer
from tests.fixtures.inference import INFERENCE_PLUGIN, pod_docs, pool_doc
from tests.fixtures.llm_gateway import StartLlm
from tests.fixtures.sim import SimFactory

BACKEND = """
providers:
- name: fleet
  type: OpenAI
  backendRef: {group: inference.networking.k8s.io, kind: InferencePool, name: llama}
models:
- {name: llama, provider: fleet, model: llama-3-8b}
"""


def served(servers: list[SimServer]) -> int:
    return sum(s.requests for s in servers)


async def test_a_pool_provider_serves_both_clients(
    start_llm: StartLlm, sim_factory: SimFactory
) -> None:
    load_plugins([INFERENCE_PLUGIN])
    servers = await sim_factory(2, model="llama-3-8b")
    extra = pod_docs("llama", [s.address for s in servers]) + pool_doc(
        "llama", "llama", [servers[0].port]
    )
    gateway = await start_llm(BACKEND, extra)
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key="k", max_retries=0)
    completion = await client.chat.completions.create(
        model="llama", messages=[{"role": "user", "content": "hello there"}], max_tokens=8
    )
    assert completion.choices[0].message.content
    assert completion.model == "llama-3-8b"
    stream = await client.chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": "hello again"}],
        max_tokens=8,
        stream=True,
    )
    pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
    assert "".join(pieces)
    async with anthropic.AsyncAnthropic(
        base_url=gateway.base, api_key="k", max_retries=0
    ).messages.stream(
        model="llama", max_tokens=8, messages=[{"role": "user", "content": "and once more"}]
    ) as events:
        text = [t async for t in events.text_stream]
        final = await events.get_final_message()
    assert "".join(text) and final.usage.output_tokens > 0
    assert served(servers) == 3
