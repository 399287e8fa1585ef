"""Per-model faults on shared replicas: one adapter answers later or fails more (a bad canary)
while the other is untouched; a setting naming a model not served is an error naming it."""

from __future__ import annotations

import time

import openai
import pytest

from inference_ext.sim.config import SimConfig, SimConfigError
from tests.fixtures.sim import SimFactory


async def first_token_seconds(client: openai.AsyncOpenAI, model: str) -> float:
    started = time.monotonic()
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
    )
    first = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.monotonic() - started
    assert first is not None
    return first


async def test_a_delayed_model_starts_later_and_an_erroring_model_fails_alone(
    sim_factory: SimFactory,
) -> None:
    (server,) = await sim_factory(
        model="llama-base",
        loras=("llama-v1", "llama-v2"),
        max_loras=2,
        time_scale=1.0,
        prefill_overhead_ms=1.0,
        itl_ms=1.0,
        model_delay_ms=(("llama-v2", 60.0),),
        model_error_rate=(("llama-v2", 1.0),),
        error_codes=(503,),
    )
    client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
    stable = sorted([await first_token_seconds(client, "llama-v1") for _ in range(3)])
    assert stable[1] < 0.05
    with pytest.raises(openai.APIStatusError) as info:
        await first_token_seconds(client, "llama-v2")
    assert info.value.status_code == 503
    await client.close()

    (slow,) = await sim_factory(
        model="llama-base",
        loras=("llama-v1", "llama-v2"),
        max_loras=2,
        time_scale=1.0,
        prefill_overhead_ms=1.0,
        itl_ms=1.0,
        model_delay_ms=(("llama-v2", 60.0),),
    )
    client = openai.AsyncOpenAI(base_url=f"{slow.url}/v1", api_key="x", max_retries=0)
    canary = sorted([await first_token_seconds(client, "llama-v2") for _ in range(3)])
    assert canary[1] >= 0.06 > stable[1]
    await client.close()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"model_delay_ms": (("gpt-9", 5.0),)}, "model_delay_ms: 'gpt-9' is not served"),
        ({"model_error_rate": (("llama-3-8b", 1.5),)}, "llama-3-8b=1.5 must be a fraction"),
        ({"model_delay_ms": (("llama-3-8b", -1.0),)}, "llama-3-8b=-1.0 must be 0 or more"),
    ],
)
def test_per_model_settings_are_checked(settings: dict[str, object], message: str) -> None:
    with pytest.raises(SimConfigError, match=message):
        SimConfig(**settings)  # type: ignore[arg-type]
