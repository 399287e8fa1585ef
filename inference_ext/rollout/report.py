"""InferenceRollout status at every compile, and the compiled rollouts in the snapshot's dump.

Per rollout one parent, its target InferenceModelRewrite: ``Accepted`` True, and
``ResolvedRefs`` True, or False when the rewrite is missing, has no rule for ``model``, or that
rule has no target ``stable`` or ``canary``. The dump (``/config_dump`` ``rollouts``) holds the
compiled :class:`RolloutSpec` objects, which the controller reads from the live snapshot, and
the problem of each unresolved rollout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.compile.reports import BackendReference, PluginReport
from gateway.config.resources import ResourceSet
from gateway.snapshot import Condition, ParentStatus, RouteStatus
from inference_ext.api import AMBIENT_GROUP
from inference_ext.rollout.api import (
    REWRITE_KIND,
    InferenceRollout,
    RolloutSpec,
    compile_rollout,
)


def rollout_report(resources: ResourceSet, references: Sequence[BackendReference]) -> PluginReport:
    """Every rollout's status, compiled spec and problem."""
    statuses: list[RouteStatus] = []
    specs: list[RolloutSpec] = []
    problems: dict[str, str] = {}
    for obj in resources.typed_list(AMBIENT_GROUP, "InferenceRollout"):
        if not isinstance(obj, InferenceRollout):
            continue
        spec = compile_rollout(obj)
        ref = obj.spec.target_ref
        rewrite = resources.find(ref.group, REWRITE_KIND, spec.namespace, ref.name)
        problem = target_problem(spec, rewrite)
        resolved = (
            Condition("ResolvedRefs", "False", "InvalidTarget", f"targetRef: {problem}")
            if problem
            else Condition("ResolvedRefs", "True", "ResolvedRefs")
        )
        parent = ParentStatus(
            f"{REWRITE_KIND} {spec.rewrite}", (Condition("Accepted", "True", "Accepted"), resolved)
        )
        statuses.append(RouteStatus("InferenceRollout", spec.namespace, spec.name, (parent,)))
        specs.append(spec)
        if problem:
            problems[spec.key] = f"targetRef: {problem}"
    if not specs:
        return PluginReport(statuses)
    return PluginReport(statuses, {"specs": specs, "problems": problems})


def target_problem(spec: RolloutSpec, rewrite: Mapping[str, Any] | None) -> str | None:
    """Why the rollout cannot drive its rewrite, or None when it can."""
    if rewrite is None:
        return f"{REWRITE_KIND} {spec.rewrite} not found"
    rules = (rewrite.get("spec") or {}).get("rules") or []
    for rule in rules:
        matches = rule.get("matches") or []
        models = [(m.get("model") or {}).get("value") for m in matches]
        if spec.model in models:
            targets = {t.get("modelRewrite") for t in rule.get("targets") or []}
            missing = [v for v in (spec.stable, spec.canary) if v not in targets]
            if missing:
                return (
                    f"{REWRITE_KIND} {spec.rewrite}: the rule for model {spec.model!r} "
                    f"has no target {missing[0]!r}"
                )
            return None
    return f"{REWRITE_KIND} {spec.rewrite} has no rule matching model {spec.model!r}"
