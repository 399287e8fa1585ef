"""The serving side of rollouts: per-version aggregates, answers' versions, applied plans.

Each serving process keeps one :class:`Recorder`. It observes every rewritten request's sample
into the aggregate of its (rewrite, incoming model, target model), remembers the version of the
last ``max_answers`` answers by request id (so a later feedback score counts for the right
version), hands its aggregates and the agreement counted since the last drain to the admin
process when asked (and starts new ones), and applies the weights and mirror plans the admin
process pushes to the rewrite state (and the route rules' weights to the gateway's
``route_weights``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from gateway.route_weights import RouteAnswer, RouteWeights
from inference_ext.rewrite import RewriteState, VersionSample, route_version
from inference_ext.rewrite.mirror import MirrorPlan
from inference_ext.rollout.agreement import AgreementView, Comparison
from inference_ext.rollout.sketch import Aggregate

VersionKey = tuple[str, str, str]  # (rewrite ns/name, incoming model, target model)
RuleKey = tuple[str, str]  # (rewrite ns/name, incoming model)
Weights = dict[RuleKey, dict[str, int]]
MAX_FOREIGN_FEEDBACK = 10_000


@dataclass(frozen=True, slots=True)
class Mirror:
    """Copy ``fraction`` of a rule's stable answers to ``canary`` and count agreement for
    ``rollout``: exact answers, or Dice ``similarity`` at least this."""

    rollout: str
    canary: str
    fraction: float
    similarity: float | None

    def plan(self) -> MirrorPlan:
        """The rewrite state's plan."""
        comparison = (
            Comparison("exact")
            if self.similarity is None
            else Comparison("similarity", self.similarity)
        )
        return MirrorPlan(self.rollout, self.canary, self.fraction, comparison)


@dataclass(frozen=True, slots=True)
class ServingPlan:
    """What the admin process pushes to every serving process: rewrite splits, mirror plans and
    route rules' backendRef weights (keyed by (route ``ns/name``, rule name))."""

    weights: Weights = field(default_factory=dict)
    mirrors: dict[RuleKey, Mirror] = field(default_factory=dict)
    routes: Weights = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Drained:
    """One serving process's measurements since the last drain."""

    versions: list[tuple[VersionKey, dict[str, Any]]]
    agreement: dict[str, tuple[int, int]]  # rollout -> (agreed, compared)
    # Feedback (x-ambient-feedback) for answers this process did not serve: another may have.
    feedback: list[tuple[str, float]] = field(default_factory=list)


class Recorder:
    """One serving process's measurements and applied plan."""

    def __init__(self, max_answers: int = 100_000) -> None:
        self.max_answers = max_answers
        self._aggregates: dict[VersionKey, Aggregate] = {}
        self._answers: OrderedDict[str, VersionKey] = OrderedDict()
        self._agreement_seen: dict[tuple[str, str], tuple[int, int]] = {}
        self._foreign: list[tuple[str, float]] = []  # feedback for answers served elsewhere
        self.applied = ServingPlan()

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

    def observe_route(self, answer: RouteAnswer) -> None:
        """Count one answer of a driven route rule's backendRef the gateway measured (a Service:
        TTFT is the time to the first body bytes; no tokens, so no TPOT)."""
        self.observe(
            VersionSample(
                answer.request_id, "", route_version(answer.route, answer.rule), "",
                answer.backend_ref, answer.status, answer.first_byte, None, 0, answer.duration,
                None,
            )
        )  # fmt: skip

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

    def feedback(self, request_id: str, score: float) -> None:
        """An application's score for an answer (x-ambient-feedback on a later request): counted
        here when this process served it, else handed to the admin process with the next drain
        (bounded: the oldest are dropped)."""
        if not self.score(request_id, "feedback-score", score):
            self._foreign.append((request_id, score))
            if len(self._foreign) > MAX_FOREIGN_FEEDBACK:
                del self._foreign[0]

    def drain(self, agreement: AgreementView | None = None) -> Drained:
        """Every aggregate since the last drain, as plain data (the next ones start empty), and
        what ``agreement`` (the process's counters, per rollout and time slot) added since."""
        versions = [(key, aggregate.to_state()) for key, aggregate in self._aggregates.items()]
        self._aggregates = {}
        added: dict[str, tuple[int, int]] = {}
        seen: dict[tuple[str, str], tuple[int, int]] = {}
        for rollout, slots in (agreement or {}).items():
            for start, (agree, total) in slots.items():
                before = self._agreement_seen.get((rollout, start), (0, 0))
                seen[(rollout, start)] = (agree, total)
                if total > before[1]:
                    was = added.get(rollout, (0, 0))
                    added[rollout] = (was[0] + agree - before[0], was[1] + total - before[1])
        self._agreement_seen = seen  # slots the counters dropped are forgotten here too
        foreign, self._foreign = self._foreign, []
        return Drained(versions, added, foreign)

    def apply(
        self, plan: ServingPlan, rewrites: RewriteState | None, routes: RouteWeights | None = None
    ) -> None:
        """Make ``plan`` the rewrite state's overrides and mirrors and the route rules' weights;
        drop those no longer in it."""
        if routes is not None:
            old_routes = self.applied.routes
            for route, rule in old_routes.keys() - plan.routes.keys():
                routes.set(route, rule, None)
            for (route, rule), split in plan.routes.items():
                if old_routes.get((route, rule)) != split:
                    routes.set(route, rule, split)
        if rewrites is not None:
            old = self.applied
            for rewrite, model in old.weights.keys() - plan.weights.keys():
                rewrites.set_weights(rewrite, model, None)
            for (rewrite, model), split in plan.weights.items():
                if old.weights.get((rewrite, model)) != split:
                    rewrites.set_weights(rewrite, model, split)
            for rewrite, model in old.mirrors.keys() - plan.mirrors.keys():
                rewrites.set_mirror(rewrite, model, None)
            for (rewrite, model), mirror in plan.mirrors.items():
                if old.mirrors.get((rewrite, model)) != mirror:
                    rewrites.set_mirror(rewrite, model, mirror.plan())
        self.applied = plan
