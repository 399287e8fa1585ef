"""InferenceRollout status at every compile, and the compiled rollouts in the snapshot's dump.

Per rollout one parent, its target InferenceModelRewrite or HTTPRoute: ``Accepted`` True, and
``ResolvedRefs`` True, or False when the rewrite is missing, has no rule for ``model``, or that
rule has no target ``stable`` or ``canary`` — or the route is missing, has no rule named
``sectionName``, or that rule has no backendRef named ``stable`` or ``canary``. The dump
(``/config_dump`` ``rollouts``) holds the compiled :class:`RolloutSpec` objects, which the
controller reads from the live snapshot, and the problem of each unresolved rollout.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from gateway.compile.reports import BackendReference, PluginReport
from gateway.config.resources import ResourceSet
from gateway.snapshot import Condition, ParentStatus, RouteStatus
from inference_ext.api import AMBIENT_GROUP
from inference_ext.rollout.api import (
    REWRITE_GROUP,
    REWRITE_KIND,
    ROUTE_GROUP,
    ROUTE_KIND,
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
        if spec.route is not None:
            route = resources.find(ROUTE_GROUP, ROUTE_KIND, spec.namespace, ref.name)
            problem = route_problem(spec, route)
            target = f"{ROUTE_KIND} {spec.route}"
        else:
            rewrite = resources.find(REWRITE_GROUP, REWRITE_KIND, spec.namespace, ref.name)
            problem = target_problem(spec, rewrite)
            target = f"{REWRITE_KIND} {spec.rewrite}"
        resolved = (
            Condition("ResolvedRefs", "False", "InvalidTarget", f"targetRef: {problem}")
            if problem
            else Condition("ResolvedRefs", "True", "ResolvedRefs")
        )
        parent = ParentStatus(target, (Condition("Accepted", "True", "Accepted"), resolved))
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


def route_problem(spec: RolloutSpec, route: Mapping[str, Any] | None) -> str | None:
    """Why the rollout cannot drive its HTTPRoute rule's weights, or None when it can."""
    if route is None:
        return f"{ROUTE_KIND} {spec.route} not found"
    rules = (route.get("spec") or {}).get("rules") or []
    found = next((rule for rule in rules if rule.get("name") == spec.rule), None)
    if found is None:
        return f"{ROUTE_KIND} {spec.route} has no rule named {spec.rule!r}"
    names = {ref.get("name") for ref in found.get("backendRefs") or []}
    missing = [v for v in (spec.stable, spec.canary) if v not in names]
    if missing:
        listed = ", ".join(repr(m) for m in missing)
        return f"{ROUTE_KIND} {spec.route} rule {spec.rule!r} has no backendRef named {listed}"
    return None
