"""The serving side of rollouts: per-version aggregates, answers' versions, applied weights.

Each serving process keeps one :class:`Recorder`. It observes every rewritten request's sample
into the aggregate of its (rewrite, incoming model, target model), remembers the version of the
last ``max_answers`` answers by request id (so a later feedback score counts for the right
version), hands its aggregates to the admin process when asked (and starts new ones), and
applies the weights the admin process pushes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from inference_ext.rollout.contract import VersionSample, WeightSink
from inference_ext.rollout.sketch import Aggregate

VersionKey = tuple[str, str, str]  # (rewrite ns/name, incoming model, target model)
RuleKey = tuple[str, str]  # (rewrite ns/name, incoming model)
Weights = dict[RuleKey, dict[str, int]]


class Recorder:
    """One serving process's measurements and applied weights."""

    def __init__(self, max_answers: int = 100_000) -> None:
        self.max_answers = max_answers
        self._aggregates: dict[VersionKey, Aggregate] = {}
        self._answers: OrderedDict[str, VersionKey] = OrderedDict()
        self.applied: Weights = {}

    def observe(self, sample: VersionSample) -> None:
        """Count one rewritten request (an observer of the rewrite state)."""
        key = (sample.rewrite, sample.incoming_model, sample.target_model)
        aggregate = self._aggregates.get(key)
        if aggregate is None:
            aggregate = self._aggregates[key] = Aggregate()
        aggregate.observe(sample.status, sample.ttft, sample.tpot, sample.duration)
        if sample.request_id:
            self._answers[sample.request_id] = key
            self._answers.move_to_end(sample.request_id)
            if len(self._answers) > self.max_answers:
                self._answers.popitem(last=False)

    def score(self, request_id: str, metric: str, value: float) -> bool:
        """Count a score for the answer ``request_id``; False when this process did not serve
        it (or has forgotten it)."""
        key = self._answers.get(request_id)
        if key is None:
            return False
        aggregate = self._aggregates.get(key)
        if aggregate is None:
            aggregate = self._aggregates[key] = Aggregate()
        aggregate.score(metric, value)
        return True

    def drain(self) -> list[tuple[VersionKey, dict[str, Any]]]:
        """Every aggregate since the last drain, as plain data; the next ones start empty."""
        drained = [(key, aggregate.to_state()) for key, aggregate in self._aggregates.items()]
        self._aggregates = {}
        return drained

    def apply(self, weights: Weights, sink: WeightSink | None) -> None:
        """Make ``weights`` the overrides: set each, drop those no longer pushed."""
        if sink is not None:
            for rewrite, model in self.applied.keys() - weights.keys():
                sink.set_weights(rewrite, model, None)
            for (rewrite, model), split in weights.items():
                if self.applied.get((rewrite, model)) != split:
                    sink.set_weights(rewrite, model, split)
        self.applied = {key: dict(split) for key, split in weights.items()}
