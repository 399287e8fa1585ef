"""Whose answers match: the seed and the model decide the words; a canary can answer as stable."""

from __future__ import annotations

import argparse
from itertools import pairwise

import httpx
import pytest

from inference_ext.sim.cli import config_from_args, configure
from inference_ext.sim.config import SimConfig, SimConfigError
from inference_ext.sim.server import SimServer
from tests.fixtures.sim import SimFactory

PROMPTS = [f"question {i}: what is the answer?" for i in range(40)]


async def answers(server: SimServer, model: str, prompts: list[str] = PROMPTS) -> list[str]:
    """The text of each prompt's chat completion (whole JSON bodies)."""
    out = []
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        for prompt in prompts:
            body = {"model": model, "messages": [{"role": "user", "content": prompt}]}
            response = await client.post("/v1/chat/completions", json=body)
            assert response.status_code == 200, response.text
            out.append(response.json()["choices"][0]["message"]["content"])
    return out


def bigrams(text: str) -> set[tuple[str, str]]:
    """Pairs of consecutive words (the simulator's words are 4 characters)."""
    words = [text[i : i + 4] for i in range(0, len(text), 4)]
    return set(pairwise(words))


async def test_the_same_seed_answers_alike_and_another_seed_or_model_does_not(
    sim_factory: SimFactory,
) -> None:
    (first,) = await sim_factory(model="chat-v1", output_tokens=(8, 16))
    (again,) = await sim_factory(model="chat-v1", output_tokens=(8, 16))
    (reseeded,) = await sim_factory(model="chat-v1", output_tokens=(8, 16), seed=8)
    (renamed,) = await sim_factory(model="chat-v2", output_tokens=(8, 16))
    stable = await answers(first, "chat-v1")
    assert await answers(again, "chat-v1") == stable
    assert all(a != b for a, b in zip(await answers(reseeded, "chat-v1"), stable, strict=True))
    assert all(a != b for a, b in zip(await answers(renamed, "chat-v2"), stable, strict=True))


async def test_a_canary_answering_as_stable_differs_on_its_variant_share_only(
    sim_factory: SimFactory,
) -> None:
    (stable_sim,) = await sim_factory(model="chat-v1", output_tokens=(8, 16))
    (twin,) = await sim_factory(model="chat-v2", output_tokens=(8, 16), answers_of="chat-v1")
    (canary,) = await sim_factory(
        model="chat-v2", output_tokens=(8, 16), answers_of="chat-v1", answer_variant=0.5
    )
    (replay,) = await sim_factory(
        model="chat-v2", output_tokens=(8, 16), answers_of="chat-v1", answer_variant=0.5
    )
    stable = await answers(stable_sim, "chat-v1")
    assert await answers(twin, "chat-v2") == stable
    variant = await answers(canary, "chat-v2")
    differ = [a != b for a, b in zip(variant, stable, strict=True)]
    assert 12 <= sum(differ) <= 28  # half of 40 prompts, give or take the seeded draw
    assert [len(a) for a in variant] == [len(b) for b in stable]  # other words, same length
    for a, b in zip(variant, stable, strict=True):
        if a != b:  # another stride: not stable's words shifted, no word pair in common
            assert not bigrams(a) & bigrams(b)
    assert await answers(replay, "chat-v2") == variant  # which prompts vary is fixed by the seed


def test_the_flags_reach_the_config_and_bad_values_are_named() -> None:
    parser = argparse.ArgumentParser()
    configure(parser)
    args = parser.parse_args(["--answers-of", "chat-v1", "--answer-variant", "0.25"])
    config = config_from_args(args)
    assert (config.answers_of, config.answer_variant) == ("chat-v1", 0.25)
    with pytest.raises(SimConfigError, match=r"answer_variant: must be a fraction in \[0, 1\]"):
        SimConfig(answer_variant=1.5)
    with pytest.raises(SimConfigError, match="answers_of: 'a b' must be letters"):
        SimConfig(answers_of="a b")
