"""``inference.ambient.dev/v1alpha1`` InferenceRollout: the config edge, and its compiled form.

A rollout moves an InferenceModelRewrite's split of one incoming ``model`` — or an HTTPRoute
rule's split between two backendRefs (``targetRef.sectionName`` names the rule) — from
``stable`` to ``canary`` in steps (``stepWeight`` up to ``maxWeight``, or an explicit
``stepWeights`` list), checking the canary against the stable version every ``interval``
(Flagger's analysis loop). A metric is either built in — measured by the gateway per version —
or a PromQL instant query.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

import orjson
from pydantic import Field, field_validator, model_validator

from gateway.config.duration import parse_duration
from gateway.config.models import Metadata, Model
from inference_ext.rewrite import route_version

REWRITE_GROUP = "inference.networking.x-k8s.io"
REWRITE_KIND = "InferenceModelRewrite"
ROUTE_GROUP = "gateway.networking.k8s.io"
ROUTE_KIND = "HTTPRoute"

# ttft-p90, tpot-p99, latency-p50: a percentile of a per-version histogram (seconds).
_PERCENTILE = re.compile(r"^(ttft|tpot|latency)-p([1-9][0-9]?)$")
_SCORES = ("feedback-score", "agreement")
DEFAULT_MIRROR = 0.1  # agreement: copy one stable answer in ten to the canary
BUILTIN_METRICS = ("ttft-pNN", "tpot-pNN", "latency-pNN", "error-rate", *_SCORES)


def percentile_metric(name: str) -> tuple[str, float] | None:
    """``("ttft", 0.9)`` for ``ttft-p90``; None for any other name."""
    match = _PERCENTILE.match(name)
    return (match.group(1), int(match.group(2)) / 100) if match else None


def is_builtin(name: str) -> bool:
    """True for a metric the gateway measures itself."""
    return name == "error-rate" or name in _SCORES or percentile_metric(name) is not None


class RolloutTargetRef(Model):
    """What the rollout drives (same namespace): an InferenceModelRewrite's split of a model, or
    the backendRef weights of the HTTPRoute rule named ``sectionName``."""

    group: str | None = None  # default: the kind's group
    kind: Literal["InferenceModelRewrite", "HTTPRoute"]
    name: str = Field(min_length=1)
    section_name: str | None = Field(default=None, min_length=1, max_length=253)

    @model_validator(mode="after")
    def _kind(self) -> RolloutTargetRef:
        group = REWRITE_GROUP if self.kind == REWRITE_KIND else ROUTE_GROUP
        if self.group is not None and self.group != group:
            raise ValueError(f"group: {self.kind} is in group {group!r}, got {self.group!r}")
        if self.kind == ROUTE_KIND and self.section_name is None:
            raise ValueError("sectionName: required for an HTTPRoute: the name of its rule")
        if self.kind == REWRITE_KIND and self.section_name is not None:
            raise ValueError("sectionName: only for an HTTPRoute target")
        return self


class PrometheusQuery(Model):
    """A PromQL instant query against an existing Prometheus (``/api/v1/query``)."""

    address: str = Field(pattern=r"^https?://")
    query: str = Field(min_length=1)


class RolloutMetric(Model):
    """One check: a built-in metric or a Prometheus query, and its limits."""

    name: str = Field(min_length=1)
    max: float | None = None
    min: float | None = None
    max_ratio: float | None = Field(default=None, gt=0)
    min_ratio: float | None = Field(default=None, gt=0)
    prometheus: PrometheusQuery | None = None
    # agreement only: the share of stable's answers copied to the canary, and how answers are
    # compared (absent: exactly; else word-pair Dice similarity at least this)
    mirror: float | None = Field(default=None, gt=0, le=1)
    similarity: float | None = Field(default=None, ge=0, le=1)

    @model_validator(mode="after")
    def _limits(self) -> RolloutMetric:
        if self.prometheus is None and not is_builtin(self.name):
            raise ValueError(
                f"name: unknown metric {self.name!r} (built in: {', '.join(BUILTIN_METRICS)}; "
                "or give prometheus: {address, query})"
            )
        if self.prometheus is not None and (self.max_ratio, self.min_ratio) != (None, None):
            raise ValueError(
                f"metric {self.name!r}: a prometheus query has no stable/canary ratio; "
                "use max or min"
            )
        if self.name != "agreement" and (self.mirror, self.similarity) != (None, None):
            raise ValueError(f"metric {self.name!r}: mirror and similarity are agreement's")
        if self.name == "agreement" and (self.max_ratio, self.min_ratio) != (None, None):
            raise ValueError(
                "metric 'agreement': is the canary's agreement with stable; use max or min"
            )
        if (self.max, self.min, self.max_ratio, self.min_ratio) == (None, None, None, None):
            raise ValueError(f"metric {self.name!r}: needs a limit: max, min, maxRatio or minRatio")
        return self


class RolloutAnalysis(Model):
    """How often to check, what to check, and the weight steps."""

    interval: str = "30s"
    threshold: int = Field(default=2, ge=1)
    step_weight: int | None = Field(default=None, ge=1, le=100)
    step_weights: list[int] | None = Field(default=None, min_length=1)
    max_weight: int | None = Field(default=None, ge=1, le=100)
    min_requests: int = Field(default=20, ge=0)
    metrics: list[RolloutMetric] = Field(default_factory=list)

    @field_validator("interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("must be more than 0s")
        return value

    @model_validator(mode="after")
    def _steps(self) -> RolloutAnalysis:
        if (self.step_weight is None) == (self.step_weights is None):
            raise ValueError("give exactly one of stepWeight and stepWeights")
        if self.step_weights is not None:
            weights = self.step_weights
            if any(not 1 <= w <= 100 for w in weights) or weights != sorted(set(weights)):
                raise ValueError(f"stepWeights: {weights} must be increasing percentages in 1..100")
            if self.max_weight is not None and weights[-1] > self.max_weight:
                raise ValueError(f"stepWeights: {weights[-1]} is above maxWeight {self.max_weight}")
        return self


class InferenceRolloutSpec(Model):
    """What to roll out where."""

    target_ref: RolloutTargetRef
    # The incoming model whose rewrite rule is driven; not used with an HTTPRoute target.
    model: str | None = Field(default=None, min_length=1)
    # Versions: the rewrite rule's target models, or the route rule's backendRef names.
    stable: str = Field(min_length=1)
    canary: str = Field(min_length=1)
    analysis: RolloutAnalysis

    @model_validator(mode="after")
    def _versions(self) -> InferenceRolloutSpec:
        if self.stable == self.canary:
            raise ValueError(f"canary: must differ from stable (both {self.stable!r})")
        if self.target_ref.kind == REWRITE_KIND and self.model is None:
            raise ValueError("model: required for an InferenceModelRewrite target")
        if self.target_ref.kind == ROUTE_KIND and any(
            m.name == "agreement" for m in self.analysis.metrics
        ):
            raise ValueError(
                "analysis.metrics: agreement mirrors through an InferenceModelRewrite; "
                "an HTTPRoute target cannot use it"
            )
        return self


class InferenceRollout(Model):
    """``inference.ambient.dev/v1alpha1`` InferenceRollout."""

    metadata: Metadata
    spec: InferenceRolloutSpec


# -- compiled ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MetricCheck:
    """One compiled check."""

    name: str
    max: float | None = None
    min: float | None = None
    max_ratio: float | None = None
    min_ratio: float | None = None
    prometheus_address: str | None = None
    prometheus_query: str | None = None
    mirror: float | None = None  # agreement: the share of stable's answers copied
    similarity: float | None = None  # agreement: None compares exactly

    @property
    def ratio(self) -> bool:
        """True when the limit applies to canary / stable rather than to the canary's value."""
        return self.max_ratio is not None or self.min_ratio is not None

    @property
    def limit(self) -> str:
        """The limit as people read it: ``<= 1.2x stable``, ``<= 0.02``."""
        parts = []
        if self.max_ratio is not None:
            parts.append(f"<= {self.max_ratio:g}x stable")
        if self.min_ratio is not None:
            parts.append(f">= {self.min_ratio:g}x stable")
        if self.max is not None:
            parts.append(f"<= {self.max:g}")
        if self.min is not None:
            parts.append(f">= {self.min:g}")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class RolloutSpec:
    """One compiled rollout. ``rewrite`` names what is driven as the version samples do: the
    target InferenceModelRewrite's ``ns/name``, or ``HTTPRoute ns/name/rule`` (then ``route``
    and ``rule`` are set and ``model`` is ``""``)."""

    namespace: str
    name: str
    rewrite: str
    model: str
    stable: str
    canary: str
    interval: float
    threshold: int
    steps: tuple[int, ...]  # canary percentages, the last one maxWeight
    min_requests: int
    checks: tuple[MetricCheck, ...]
    route: str | None = None  # HTTPRoute target: "ns/name"
    rule: str | None = None  # HTTPRoute target: the rule's name

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return f"{self.namespace}/{self.name}"

    @property
    def identity(self) -> tuple[str, str, str, str]:
        """What is being rolled out: a change here is a new rollout, not a new analysis."""
        return (self.rewrite, self.model, self.stable, self.canary)

    @property
    def digest(self) -> str:
        """A hash of the spec: a changed one restarts the analysis."""
        return hashlib.sha256(orjson.dumps(self)).hexdigest()[:16]


def compile_rollout(obj: InferenceRollout) -> RolloutSpec:
    """The compiled form of a validated InferenceRollout."""
    analysis = obj.spec.analysis
    if analysis.step_weights is not None:
        steps = tuple(analysis.step_weights)
    else:
        assert analysis.step_weight is not None  # the validator wants exactly one
        top = analysis.max_weight or 50
        steps = (*tuple(range(analysis.step_weight, top, analysis.step_weight)), top)
    ref = obj.spec.target_ref
    target = f"{obj.metadata.namespace}/{ref.name}"
    route, rule = (target, ref.section_name) if ref.kind == ROUTE_KIND else (None, None)
    return RolloutSpec(
        namespace=obj.metadata.namespace,
        name=obj.metadata.name,
        rewrite=route_version(target, rule) if rule is not None else target,
        model="" if rule is not None else obj.spec.model or "",
        stable=obj.spec.stable,
        canary=obj.spec.canary,
        interval=parse_duration(analysis.interval),
        threshold=analysis.threshold,
        steps=steps,
        min_requests=analysis.min_requests,
        checks=tuple(
            MetricCheck(
                m.name,
                m.max,
                m.min,
                m.max_ratio,
                m.min_ratio,
                m.prometheus.address if m.prometheus else None,
                m.prometheus.query if m.prometheus else None,
                (m.mirror or DEFAULT_MIRROR) if m.name == "agreement" else None,
                m.similarity,
            )
            for m in analysis.metrics
        ),
        route=route,
        rule=rule,
    )
