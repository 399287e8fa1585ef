"""Answer agreement through the gateway: a rewrite sends ``llama`` to ``llama-v1``; a mirror
plan copies each answered request to the canary ``llama-v2`` (both LoRA adapters on loopback
simulators) in the background and counts whether the answers agree. The client streams with the
``openai`` SDK and gets stable's answer, whatever the copy does."""

from __future__ import annotations

from dataclasses import replace

import httpx
import openai
import pytest

from inference_ext.pool import Pools
from inference_ext.rewrite import RewriteState
from inference_ext.rewrite.mirror import MirrorPlan
from inference_ext.rollout.agreement import AgreementStats, Comparison, stats_since
from tests.fixtures.inference import (
    pools,  # noqa: F401  (fixture)
    rewrite_state,  # noqa: F401  (fixture)
)
from tests.inference_ext.test_pool_routing import eventually, fleet_yaml, sims
from tests.inference_ext.test_rewrite_routing import VERSIONS, canary, start

ROLLOUT = "default/llama-canary"
ASKED = 12


def plan(fraction: float = 1.0) -> MirrorPlan:
    return MirrorPlan(ROLLOUT, "llama-v2", fraction, Comparison("exact"))


async def ask_streamed(port: int, n: int) -> list[str]:
    """``n`` streamed chat completions for ``llama`` through the gateway: who answered each."""
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="-")
    answered = []
    try:
        for i in range(n):
            stream = await client.chat.completions.create(
                model="llama",
                messages=[{"role": "user", "content": f"question {i}"}],
                stream=True,
                max_tokens=8,
            )
            models, text = set(), ""
            async for chunk in stream:
                models.add(chunk.model)
                if chunk.choices and chunk.choices[0].delta.content:
                    text += chunk.choices[0].delta.content
            assert text
            answered.append(models.pop() if len(models) == 1 else repr(models))
    finally:
        await client.close()
    return answered


async def counted(state: RewriteState, total: int) -> AgreementStats:
    """The rollout's agreement counts once ``total`` copies were compared."""

    def done() -> bool:
        view = state.mirror.counters.view()
        return state.mirror.in_flight() == 0 and stats_since(view, ROLLOUT, 0).total >= total

    await eventually(done, timeout=20)
    return stats_since(state.mirror.counters.view(), ROLLOUT, 0)


async def test_a_canary_answering_as_stable_agrees_on_every_copy(
    pools: Pools,  # noqa: F811
    rewrite_state: RewriteState,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    twin = replace(VERSIONS, answers_of="llama-v1")  # every adapter answers as llama-v1 would
    async with sims(twin, 2) as servers:
        await start(gateway_factory, fleet_yaml(free_port, servers, extra=canary(1, 0)))
        rewrite_state.set_mirror("default/canary", "llama", plan())
        try:
            assert await ask_streamed(free_port, ASKED) == ["llama-v1"] * ASKED
            stats = await counted(rewrite_state, ASKED)
        finally:
            rewrite_state.set_mirror("default/canary", "llama", None)
    assert (stats.agree, stats.total) == (ASKED, ASKED)
    assert rewrite_state.mirror.sent == ASKED


async def test_a_canary_with_other_answers_disagrees_and_clients_still_get_stable(
    pools: Pools,  # noqa: F811
    rewrite_state: RewriteState,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(VERSIONS, 2) as servers:  # each adapter answers in its own words
        await start(gateway_factory, fleet_yaml(free_port, servers, extra=canary(1, 0)))
        rewrite_state.set_mirror("default/canary", "llama", plan())
        try:
            assert await ask_streamed(free_port, ASKED) == ["llama-v1"] * ASKED
            stats = await counted(rewrite_state, ASKED)
        finally:
            rewrite_state.set_mirror("default/canary", "llama", None)
    assert (stats.agree, stats.total) == (0, ASKED)
    # The copies went through the pool's picker as llama-v2 and were counted out again.
    assert all(n == 0 for n in pools.schedulers["default/llama"].inflight.values())


async def test_no_copy_without_a_plan_or_at_fraction_zero_nor_of_canary_answers(
    pools: Pools,  # noqa: F811
    rewrite_state: RewriteState,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    async with sims(VERSIONS, 2) as servers:
        await start(gateway_factory, fleet_yaml(free_port, servers, extra=canary(1, 0)))
        await ask_streamed(free_port, 3)  # no plan
        rewrite_state.set_mirror("default/canary", "llama", plan(0.0))
        await ask_streamed(free_port, 3)
        # Requests the rule sends to the canary itself are not copied to it.
        rewrite_state.set_weights("default/canary", "llama", {"llama-v2": 1})
        rewrite_state.set_mirror("default/canary", "llama", plan(1.0))
        try:
            assert await ask_streamed(free_port, 3) == ["llama-v2"] * 3
        finally:
            rewrite_state.set_mirror("default/canary", "llama", None)
            rewrite_state.set_weights("default/canary", "llama", None)
    assert rewrite_state.mirror.sent == 0
    assert rewrite_state.mirror.counters.view() == {}


@pytest.mark.parametrize("fraction", [-0.1, 1.5])
def test_a_mirror_plan_outside_zero_to_one_is_refused(fraction: float) -> None:
    state = RewriteState()
    with pytest.raises(ValueError, match=r"mirrored fraction must be in \[0, 1\]"):
        state.set_mirror("default/canary", "llama", plan(fraction))
    assert state.mirror_plan("default/canary", "llama") is None


async def test_feedback_on_a_later_request_reaches_the_observers_and_bad_values_get_400(
    pools: Pools,  # noqa: F811
    rewrite_state: RewriteState,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    scores: list[tuple[str, float]] = []
    rewrite_state.feedback_observers.append(lambda rid, score: scores.append((rid, score)))
    async with sims(VERSIONS, 2) as servers:
        await start(gateway_factory, fleet_yaml(free_port, servers, extra=canary(1, 0)))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=30) as c:
            body = {"model": "llama", "messages": [{"role": "user", "content": "hi"}]}
            ok = await c.post(
                "/v1/chat/completions",
                json=body,
                headers={"x-ambient-feedback": "answer-1=0.25, answer-2=1"},
            )
            assert ok.status_code == 200
            for bad in ("answer-1", "answer-1=1.5", "=0.5", "answer-1=high"):
                refused = await c.post(
                    "/v1/chat/completions", json=body, headers={"x-ambient-feedback": bad}
                )
                assert refused.status_code == 400, bad
                assert "x-ambient-feedback" in refused.text and repr(bad.strip()) in refused.text
            many = ",".join(f"a{i}=0.5" for i in range(17))
            refused = await c.post(
                "/v1/chat/completions", json=body, headers={"x-ambient-feedback": many}
            )
            assert refused.status_code == 400 and "at most 16" in refused.text
    assert scores == [("answer-1", 0.25), ("answer-2", 1.0)]
