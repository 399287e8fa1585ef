"""Weighted backendRef choice: exact, interleaved shares per rule."""

from __future__ import annotations

import random
from collections import Counter

from gateway.snapshot import BackendChoice, CompiledRule, RouteRef, smooth_weighted_sequence


def rule_with(*weights: int) -> CompiledRule:
    return CompiledRule(
        RouteRef("HTTPRoute", "default", "r", 0),
        choices=tuple(BackendChoice(w, None, error=f"b{i}") for i, w in enumerate(weights)),
    )


def test_sequence_is_exact_and_interleaved() -> None:
    sequence = smooth_weighted_sequence([70, 30, 0])
    assert Counter(sequence) == Counter({0: 7, 1: 3})
    # Interleaved, not in runs: the lighter backend never waits more than 4 turns.
    assert max(len(run) for run in "".join(map(str, sequence * 2)).split("1")) <= 4


def test_any_500_consecutive_choices_hold_the_shares() -> None:
    rule = rule_with(70, 30, 0)
    for _ in range(7):  # start the window at an arbitrary turn
        rule.choose()
    seen = Counter(choice.error for choice in (rule.choose() for _ in range(500)) if choice)
    assert seen == Counter({"b0": 350, "b1": 150})


def test_zero_weights_choose_nothing_and_unreduced_cycles_fall_back_to_random() -> None:
    assert rule_with(0, 0).choose() is None
    assert smooth_weighted_sequence([999_999, 1]) == ()
    rule = rule_with(999_999, 1)
    assert {rule.choose().error for _ in range(50)} == {"b0"}  # type: ignore[union-attr]


def test_rng_gives_a_weighted_draw() -> None:
    rule = rule_with(1, 3)
    rng = random.Random(7)
    seen = Counter(rule.choose(rng).error for _ in range(4000))  # type: ignore[union-attr]
    assert abs(seen["b1"] / 4000 - 0.75) < 0.03
