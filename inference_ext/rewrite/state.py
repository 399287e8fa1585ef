"""Process state the rollout controller drives: weight overrides, mirror plans, version samples.

:class:`RewriteState` outlives config reloads (``api.state("inference.rewrites", ...)``): an
override set through :meth:`RewriteState.set_weights` applies to the next request and stays until
removed; so does a mirror plan (:meth:`RewriteState.set_mirror`, the copies an answer-agreement
check compares, :mod:`.mirror`). Every rewritten request's end is a :class:`VersionSample` for each
observer. The state is per process: with ``--workers N`` each worker has its own (a controller
talks to each).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from inference_ext.rewrite.mirror import CanaryMirror, MirrorPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class VersionSample:
    """One rewritten request's end — or one answer through a route rule whose backendRef
    weights are overridden — : which version answered, how fast, how much."""

    request_id: str
    pool: str  # "namespace/name"
    # The InferenceModelRewrite, "namespace/name"; for a route rule :func:`route_version`.
    rewrite: str
    incoming_model: str  # "" for a route rule's sample
    target_model: str  # a route rule's sample: the name of the backendRef that answered
    status: int
    ttft: float | None  # seconds to the first token (streamed) or the whole answer
    tpot: float | None  # seconds per output token after the first (more than one token)
    output_tokens: int
    duration: float  # seconds from the body in hand (just before the pick) to the response's end
    session: str | None  # the session key's value, when the rewrite has one and the request too


def route_version(route: str, rule: str) -> str:
    """What a route rule's version samples name as their ``rewrite``: ``HTTPRoute ns/name/rule``."""
    return f"HTTPRoute {route}/{rule}"


class RewriteState:
    """Weight overrides per rewrite and incoming model, and the observers of version samples."""

    def __init__(self) -> None:
        self._overrides: dict[str, dict[str, dict[str, int]]] = {}
        self._mirrors: dict[tuple[str, str], MirrorPlan] = {}
        self.observers: list[Callable[[VersionSample], None]] = []
        # Called with (request id of an earlier answer, score) from x-ambient-feedback.
        self.feedback_observers: list[Callable[[str, float], None]] = []
        self.mirror = CanaryMirror()

    def set_weights(self, rewrite: str, model: str, weights: Mapping[str, int] | None) -> None:
        """Override the weights of the rule of InferenceModelRewrite `rewrite` ("namespace/name")
        that matches incoming `model`; None removes the override (the resource's own weights
        apply again). Takes effect for the next request; survives config reloads."""
        if weights is None:
            models = self._overrides.get(rewrite, {})
            models.pop(model, None)
            if not models:
                self._overrides.pop(rewrite, None)
            return
        for target, weight in weights.items():
            if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                raise ValueError(
                    f"InferenceModelRewrite {rewrite}, model {model!r}: the weight of target "
                    f"{target!r} must be an integer of 0 or more, got {weight!r}"
                )
        self._overrides.setdefault(rewrite, {})[model] = dict(weights)

    def weights(self) -> dict[str, dict[str, dict[str, int]]]:
        """The current overrides, JSON-able: rewrite -> incoming model -> target -> weight."""
        return {
            rewrite: {model: dict(targets) for model, targets in models.items()}
            for rewrite, models in self._overrides.items()
        }

    def override(self, rewrite: str, model: str) -> Mapping[str, int] | None:
        """The override of ``rewrite``'s rule for ``model``, or None."""
        models = self._overrides.get(rewrite)
        return models.get(model) if models else None

    def set_mirror(self, rewrite: str, model: str, plan: MirrorPlan | None) -> None:
        """Copy a share of the requests ``rewrite``'s rule for ``model`` sends to another target
        than ``plan.canary`` to the canary, and count agreement (None: stop copying)."""
        if plan is None:
            self._mirrors.pop((rewrite, model), None)
            return
        if not 0.0 <= plan.fraction <= 1.0:
            raise ValueError(
                f"InferenceModelRewrite {rewrite}, model {model!r}: the mirrored fraction must "
                f"be in [0, 1], got {plan.fraction!r}"
            )
        self._mirrors[(rewrite, model)] = plan

    def mirror_plan(self, rewrite: str, model: str) -> MirrorPlan | None:
        """The mirror plan of ``rewrite``'s rule for ``model``, or None."""
        return self._mirrors.get((rewrite, model)) if self._mirrors else None

    def report_feedback(self, request_id: str, score: float) -> None:
        """An application's score for the answer ``request_id``, for every feedback observer."""
        for observer in self.feedback_observers:
            try:
                observer(request_id, score)
            except Exception:
                log.exception("feedback observer %r failed", observer)

    def report(self, sample: VersionSample) -> None:
        """Hand ``sample`` to every observer (one that fails is logged, the others still run)."""
        for observer in self.observers:
            try:
                observer(sample)
            except Exception:
                log.exception("version-sample observer %r failed", observer)
