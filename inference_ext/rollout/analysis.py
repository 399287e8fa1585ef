"""The analysis loop's decisions, without I/O: checks from measurements, steps from checks.

Each interval every check is ``pass``, ``fail`` or ``inconclusive`` (fewer than ``minRequests``
per version, no data). All pass: the next step (past the last: ``Succeeded`` at 100%). Any fail:
one more failure, the step is held; ``threshold`` failures: ``Failed`` at 0%. Otherwise
(inconclusive): the step is held. Failures count over the whole rollout, as Flagger's do.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from inference_ext.rollout.api import MetricCheck, RolloutSpec, percentile_metric
from inference_ext.rollout.sketch import Aggregate


class Phase(enum.StrEnum):
    """Where a rollout is."""

    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"


class Verdict(enum.StrEnum):
    """One check's outcome over one interval."""

    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check over one interval: both versions' values, what was compared, the verdict."""

    metric: str
    stable: float | None
    canary: float | None
    value: float | None
    limit: str
    verdict: Verdict
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The ``checks[]`` entry of ``/plugins/rollouts``."""
        return {
            "metric": self.metric,
            "stable": self.stable,
            "canary": self.canary,
            "value": self.value,
            "limit": self.limit,
            "verdict": str(self.verdict),
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class RolloutState:
    """What survives a restart: phase, step (0: not started), canary weight, failures."""

    phase: Phase = Phase.PENDING
    step: int = 0
    weight: int = 0
    failures: int = 0
    digest: str = ""
    identity: tuple[str, ...] = ()
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        """Plain data for the state file."""
        return {
            "phase": str(self.phase),
            "step": self.step,
            "weight": self.weight,
            "failures": self.failures,
            "digest": self.digest,
            "identity": list(self.identity),
            "message": self.message,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RolloutState:
        """The inverse of :meth:`to_json`; KeyError/ValueError on a damaged file."""
        return cls(
            Phase(data["phase"]),
            int(data["step"]),
            int(data["weight"]),
            int(data["failures"]),
            str(data["digest"]),
            tuple(str(part) for part in data["identity"]),
            str(data.get("message", "")),
        )


def weight_at(spec: RolloutSpec, step: int) -> int:
    """The canary weight of ``step``: 0 before the first, 100 past the last."""
    if step <= 0:
        return 0
    return spec.steps[step - 1] if step <= len(spec.steps) else 100


def builtin_values(
    check: MetricCheck, stable: Aggregate, canary: Aggregate
) -> tuple[float | None, float | None]:
    """(stable, canary) values of a built-in metric over the interval."""
    percentile = percentile_metric(check.name)
    if percentile is not None:
        histogram, q = percentile
        return stable.percentile(histogram, q), canary.percentile(histogram, q)
    if check.name == "error-rate":
        return stable.error_rate(), canary.error_rate()
    if check.name == "agreement":  # copies of stable's answers sent to the canary: agreed share
        return None, canary.mean_score(check.name)
    return stable.mean_score(check.name), canary.mean_score(check.name)


def judge(check: MetricCheck, value: float) -> Verdict:
    """Pass when ``value`` is within the check's ``max`` and ``min``."""
    if check.max is not None and value > check.max:
        return Verdict.FAIL
    if check.min is not None and value < check.min:
        return Verdict.FAIL
    return Verdict.PASS


def evaluate_builtin(
    check: MetricCheck, stable: Aggregate, canary: Aggregate, min_requests: int
) -> CheckResult:
    """A built-in check over one interval's aggregates of both versions."""
    stable_value, canary_value = builtin_values(check, stable, canary)
    if stable.requests < min_requests or canary.requests < min_requests:
        reason = (
            f"fewer than {min_requests} requests per version "
            f"(stable {stable.requests}, canary {canary.requests})"
        )
        return CheckResult(
            check.name, stable_value, canary_value, None, check.limit, Verdict.INCONCLUSIVE, reason
        )
    if canary_value is None or (check.ratio and stable_value is None):
        return CheckResult(
            check.name, stable_value, canary_value, None, check.limit, Verdict.INCONCLUSIVE,
            "no data",
        )  # fmt: skip
    failed: list[str] = []
    if check.max is not None and canary_value > check.max:
        failed.append(f"canary {canary_value:.4g} > {check.max:g}")
    if check.min is not None and canary_value < check.min:
        failed.append(f"canary {canary_value:.4g} < {check.min:g}")
    value: float | None = canary_value
    if check.ratio:
        assert stable_value is not None
        ratio = _ratio(canary_value, stable_value)
        value = ratio if math.isfinite(ratio) else None
        if check.max_ratio is not None and ratio > check.max_ratio:
            failed.append(f"canary/stable {ratio:.4g} > {check.max_ratio:g}")
        if check.min_ratio is not None and ratio < check.min_ratio:
            failed.append(f"canary/stable {ratio:.4g} < {check.min_ratio:g}")
    verdict = Verdict.FAIL if failed else Verdict.PASS
    return CheckResult(
        check.name, stable_value, canary_value, value, check.limit, verdict, "; ".join(failed)
    )


def _ratio(canary: float, stable: float) -> float:
    """canary / stable; 1 when both are 0, infinite when only stable is."""
    if stable == 0:
        return 1.0 if canary == 0 else math.inf
    return canary / stable


def evaluate_value(check: MetricCheck, value: float | None, error: str = "") -> CheckResult:
    """A check of one measured value (a Prometheus query's result); None is inconclusive."""
    if value is None:
        return CheckResult(
            check.name, None, None, None, check.limit, Verdict.INCONCLUSIVE, error or "no data"
        )
    verdict = judge(check, value)
    reason = f"{value:.4g} outside {check.limit}" if verdict is Verdict.FAIL else ""
    return CheckResult(check.name, None, None, value, check.limit, verdict, reason)


@dataclass(frozen=True, slots=True)
class Decision:
    """An interval's outcome: the new state and what happened (an event name for the log)."""

    state: RolloutState
    event: str  # advanced | promoted | failed-check | rolled-back | held


def decide(spec: RolloutSpec, state: RolloutState, checks: Sequence[CheckResult]) -> Decision:
    """The state after one interval of a Progressing rollout with these check results."""
    if any(c.verdict is Verdict.FAIL for c in checks):
        failed = [c.metric for c in checks if c.verdict is Verdict.FAIL]
        failures = state.failures + 1
        if failures >= spec.threshold:
            message = f"rolled back after {failures} failed checks (last: {', '.join(failed)})"
            return Decision(
                dataclasses.replace(
                    state, phase=Phase.FAILED, weight=0, failures=failures, message=message
                ),
                "rolled-back",
            )
        message = f"check failed: {', '.join(failed)} ({failures}/{spec.threshold})"
        return Decision(
            dataclasses.replace(state, failures=failures, message=message), "failed-check"
        )
    if any(c.verdict is Verdict.INCONCLUSIVE for c in checks):
        held = [c.metric for c in checks if c.verdict is Verdict.INCONCLUSIVE]
        message = f"holding step {state.step}: inconclusive {', '.join(held)}"
        return Decision(dataclasses.replace(state, message=message), "held")
    return advance(spec, state)


def advance(spec: RolloutSpec, state: RolloutState) -> Decision:
    """The next step, or promotion past the last one."""
    step = state.step + 1
    if step > len(spec.steps):
        promoted = dataclasses.replace(
            state, phase=Phase.SUCCEEDED, step=step, weight=100, message="promoted to 100%"
        )
        return Decision(promoted, "promoted")
    weight = weight_at(spec, step)
    message = f"step {step}: canary at {weight}%"
    return Decision(
        dataclasses.replace(
            state, phase=Phase.PROGRESSING, step=step, weight=weight, message=message
        ),
        "advanced",
    )


def resumed(spec: RolloutSpec, saved: RolloutState | None) -> RolloutState:
    """The state a rollout starts from, given what was saved (None: a new rollout).

    Same spec: exactly the saved state. Same versions, other analysis settings: the saved step
    and weight with failures reset (a Failed rollout tries again from where it is). Other
    versions: a new rollout.
    """
    fresh = RolloutState(digest=spec.digest, identity=spec.identity)
    if saved is None or saved.identity != spec.identity:
        return fresh
    if saved.digest == spec.digest:
        return saved
    retry = saved.phase is Phase.FAILED  # from 0%, where the rollback left it
    return dataclasses.replace(
        saved,
        phase=Phase.PROGRESSING if retry else saved.phase,
        step=0 if retry else saved.step,
        failures=0,
        digest=spec.digest,
        message="spec changed: analysis restarted at the current weight",
    )
