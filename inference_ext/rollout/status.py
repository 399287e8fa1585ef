"""An InferenceRollout's status as the object carries it, and the state a restart resumes from.

The controller publishes it at every change (``gateway.live_status``); in a cluster the leader
writes it to the object, so ``kubectl get inferencerollout -o yaml`` shows the phase, the
current step and weights, the last analysis and conditions. A gateway that starts with no
``--state-dir`` state for a rollout resumes from its status: ``specDigest`` and the versions
(``target``, ``model``, ``stable``, ``canary``) say which rollout the step was for.

Conditions: ``ResolvedRefs`` (the target exists and has both versions), ``Promoted`` (True:
Succeeded, False: Failed, Unknown: on the way) and ``ChecksPassed`` (the last analysis).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError

from gateway.config.models import Model
from inference_ext.rollout.analysis import CheckResult, Phase, RolloutState, Verdict
from inference_ext.rollout.api import RolloutSpec

log = logging.getLogger("inference_ext.rollout")

PhaseName = Literal["Pending", "Progressing", "Paused", "Succeeded", "Failed"]
VerdictName = Literal["pass", "fail", "inconclusive"]
ConditionStatus = Literal["True", "False", "Unknown"]
# The last analysis's verdict as the ChecksPassed condition: status and reason.
_CHECKED: dict[str, tuple[ConditionStatus, str]] = {
    "pass": ("True", "Passed"),
    "fail": ("False", "CheckFailed"),
    "inconclusive": ("Unknown", "Inconclusive"),
}


class StatusCondition(Model):
    """A ``metav1.Condition`` (the writer adds the transition time and generation)."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class VersionWeight(Model):
    """The share of traffic one version gets."""

    name: str
    weight: int = Field(ge=0, le=100)


class CheckStatus(Model):
    """One check of the last analysis: both versions' values, the compared value, the verdict."""

    metric: str
    verdict: VerdictName
    stable: float | None = None
    canary: float | None = None
    value: float | None = None
    limit: str = ""
    reason: str = ""


class AnalysisStatus(Model):
    """The last analysis: pass when every check passed, fail when one failed."""

    verdict: VerdictName
    checks: list[CheckStatus] = Field(default_factory=list)


class InferenceRolloutStatus(Model):
    """``status`` of an InferenceRollout."""

    phase: PhaseName
    current_step: int = Field(ge=0, description="0: not started; past the last step: promoted")
    steps: int = Field(ge=1, description="how many weight steps the analysis goes through")
    canary_weight: int = Field(ge=0, le=100)
    weights: list[VersionWeight]
    failed_checks: int = Field(ge=0)
    message: str = ""
    target: str = Field(description="what is driven: the rewrite, or 'HTTPRoute ns/name/rule'")
    model: str = ""
    stable: str
    canary: str
    spec_digest: str = Field(description="the analysis settings the step was reached with")
    last_analysis: AnalysisStatus | None = None
    conditions: list[StatusCondition] = Field(default_factory=list)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _analysis(checks: Sequence[CheckResult]) -> AnalysisStatus:
    verdicts = {c.verdict for c in checks}
    verdict = (
        Verdict.FAIL
        if Verdict.FAIL in verdicts
        else Verdict.INCONCLUSIVE
        if Verdict.INCONCLUSIVE in verdicts
        else Verdict.PASS
    )
    return AnalysisStatus(
        verdict=verdict.value,
        checks=[
            CheckStatus(
                metric=c.metric,
                verdict=c.verdict.value,
                stable=_finite(c.stable),
                canary=_finite(c.canary),
                value=_finite(c.value),
                limit=c.limit,
                reason=c.reason,
            )
            for c in checks
        ],
    )


def _conditions(
    phase: Phase, state: RolloutState, problem: str | None, last: AnalysisStatus | None
) -> list[StatusCondition]:
    resolved = StatusCondition(type="ResolvedRefs", status="True", reason="ResolvedRefs")
    if problem:
        resolved = StatusCondition(
            type="ResolvedRefs", status="False", reason="InvalidTarget", message=problem
        )
    promoted = {
        Phase.SUCCEEDED: StatusCondition(
            type="Promoted", status="True", reason="Succeeded", message=state.message
        ),
        Phase.FAILED: StatusCondition(
            type="Promoted", status="False", reason="Failed", message=state.message
        ),
    }.get(phase, StatusCondition(type="Promoted", status="Unknown", reason=str(phase)))
    if last is None:
        checked = StatusCondition(
            type="ChecksPassed", status="Unknown", reason="NotAnalysed", message="no analysis yet"
        )
    else:
        status, reason = _CHECKED[last.verdict]
        reasons = "; ".join(f"{c.metric}: {c.reason}" for c in last.checks if c.reason)
        checked = StatusCondition(
            type="ChecksPassed", status=status, reason=reason, message=reasons
        )
    return [resolved, promoted, checked]


def rollout_status(
    spec: RolloutSpec,
    state: RolloutState,
    problem: str | None,
    checks: Sequence[CheckResult] | None,
) -> dict[str, Any]:
    """The status of a rollout in ``state`` (``checks``: its last analysis, None: none yet)."""
    phase = Phase.PENDING if problem else state.phase
    last = _analysis(checks) if checks else None
    status = InferenceRolloutStatus(
        phase=phase.value,
        current_step=state.step,
        steps=len(spec.steps),
        canary_weight=state.weight,
        weights=[
            VersionWeight(name=spec.stable, weight=100 - state.weight),
            VersionWeight(name=spec.canary, weight=state.weight),
        ],
        failed_checks=state.failures,
        message=problem or state.message,
        target=spec.rewrite,
        model=spec.model,
        stable=spec.stable,
        canary=spec.canary,
        spec_digest=spec.digest,
        last_analysis=last,
        conditions=_conditions(phase, state, problem, last),
    )
    return status.model_dump(mode="json", by_alias=True, exclude_none=True)


def recorded_state(status: Mapping[str, Any] | None) -> RolloutState | None:
    """The state a status records (None: no status, or not one this controller wrote).

    A rollout shown Pending (its target was missing) past its first step was on the way:
    it resumes Progressing.
    """
    if not status or "specDigest" not in status:
        return None
    try:
        parsed = InferenceRolloutStatus.model_validate(status)
    except ValidationError as exc:
        log.warning("rollout status not resumed from: %s", exc)
        return None
    phase = Phase(parsed.phase)
    if phase is Phase.PENDING and parsed.current_step > 0:
        phase = Phase.PROGRESSING
    return RolloutState(
        phase=phase,
        step=parsed.current_step,
        weight=parsed.canary_weight,
        failures=parsed.failed_checks,
        digest=parsed.spec_digest,
        identity=(parsed.target, parsed.model, parsed.stable, parsed.canary),
        message=parsed.message,
    )
