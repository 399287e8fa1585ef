"""Pre-route policies: objects of registered stage kinds, attached to Gateways by ``targetRefs``.

Each policy names its targets as GEP-713 direct policy attachment does
(``LocalPolicyTargetReferenceWithSectionName``): a Gateway in the policy's own namespace, or one of
its listeners by ``sectionName``. Its stage kind's factory builds one stage per policy.

Conflicts: one policy of a kind applies to a listener. When several target the same listener
(by the whole Gateway or by sectionName alike), the oldest wins (creationTimestamp, then
namespace/name: GEP-713's "None" merge strategy) and the others get ``Accepted=False
(Conflicted)`` there. Listeners sharing a port and hostname, even of different Gateways, are one
listener to the data path and are settled together.

Order: the stages of one listener run in the order their kinds were registered.

Status per targetRef: ``Accepted`` True (``Accepted``), or False with ``Invalid`` (a malformed
policy, or a factory's ValueError), ``TargetNotFound`` or ``Conflicted``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from gateway.compile.dump import DumpWriter, condition_view
from gateway.compile.listeners import ListenerState
from gateway.config.errors import validation_messages
from gateway.config.models import GATEWAY_GROUP, PolicyTargetRef
from gateway.config.resources import ResourceSet
from gateway.routing.hosts import host_key
from gateway.snapshot import Condition, ParentStatus, RouteStatus
from gateway.stages import PortStages, PreRouteStage, StageFactory, stage_kinds

Listeners = dict[tuple[str, str], list[ListenerState]]
Slot = tuple[int, tuple[str, str]]  # (port, host_key(listener hostname))


@dataclass(slots=True)
class _Target:
    """One targetRef of a policy: the listeners it reaches and where it lost a conflict."""

    label: str
    condition: Condition
    listeners: list[ListenerState] = field(default_factory=list)
    lost: dict[str, str] = field(default_factory=dict)  # listener label -> winning policy


@dataclass(slots=True)
class _Policy:
    """One stage-kind object during compile."""

    order: int  # its kind's registration index
    group: str
    kind: str
    namespace: str
    name: str
    age: float
    targets: list[_Target]
    stage: PreRouteStage | None = None

    @property
    def label(self) -> str:
        """``Kind namespace/name``."""
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def precedence(self) -> tuple[float, str, str]:
        """Older first, then namespace/name."""
        return (self.age, self.namespace, self.name)


@dataclass(frozen=True, slots=True)
class PolicyResult:
    """What compile takes from the policies: stages per port, statuses, dump views."""

    pre_route: dict[int, PortStages]
    statuses: list[RouteStatus]
    views: list[dict[str, Any]]
    port_views: list[dict[str, Any]]


def compile_policies(resources: ResourceSet, states: Listeners, writer: DumpWriter) -> PolicyResult:
    """Build every stage-kind policy, settle conflicts, and group the stages per port."""
    policies: list[_Policy] = []
    for order, (group, kind, factory) in enumerate(stage_kinds()):
        objects = resources.raw.get((group, kind), {})
        for (namespace, name), loaded in sorted(objects.items()):
            policies.append(
                _build(order, group, kind, namespace, name, loaded.raw, factory, resources, states)
            )

    winners = _settle(policies)
    pre_route, port_views = _port_stages(states, winners)
    statuses = [_status(p) for p in policies]
    views = [_view(p, s, writer) for p, s in zip(policies, statuses, strict=True)]
    return PolicyResult(pre_route, statuses, views, port_views)


def _build(
    order: int,
    group: str,
    kind: str,
    namespace: str,
    name: str,
    raw: Mapping[str, Any],
    factory: StageFactory,
    resources: ResourceSet,
    states: Listeners,
) -> _Policy:
    """Resolve a policy's targets and build its stage (or say why not)."""
    policy = _Policy(order, group, kind, namespace, name, _age(raw), [])
    spec = raw.get("spec")
    refs = spec.get("targetRefs") if isinstance(spec, Mapping) else None
    if not isinstance(refs, list) or not refs:
        problem = "spec.targetRefs: at least one target is required"
        policy.targets = [_Target("-", _invalid(problem))]
        return policy
    parsed: list[PolicyTargetRef] = []
    problems: list[str] = []
    for index, ref in enumerate(refs):
        try:
            parsed.append(PolicyTargetRef.model_validate(ref))
        except ValidationError as exc:
            problems += validation_messages(exc, base=f"spec.targetRefs[{index}]")
        else:
            # Policies are namespace-local (GEP-713): a namespace would silently be ignored.
            extra = parsed[-1].model_extra or {}
            if extra.get("namespace") not in (None, namespace):
                problems.append(
                    f"spec.targetRefs[{index}].namespace: a policy targets objects in its own "
                    f"namespace ({namespace}) only"
                )
    if problems:
        policy.targets = [_Target("-", _invalid("; ".join(problems)))]
        return policy
    policy.targets = [_target(namespace, ref, states) for ref in parsed]
    try:
        policy.stage = factory(raw, resources)
    except ValueError as exc:
        for target in policy.targets:
            target.condition = _invalid(str(exc) or type(exc).__name__)
            target.listeners = []
    return policy


def _target(namespace: str, ref: PolicyTargetRef, states: Listeners) -> _Target:
    """The listeners one targetRef reaches, or TargetNotFound / Invalid."""
    label = f"{namespace}/{ref.name}" + (f"/{ref.section_name}" if ref.section_name else "")
    if (ref.group, ref.kind) != (GATEWAY_GROUP, "Gateway"):
        message = f"target kind {ref.group or 'core'}/{ref.kind} is not supported (only Gateway)"
        return _Target(label, _invalid(message))
    listeners = states.get((namespace, ref.name))
    if listeners is None:
        message = f"Gateway {namespace}/{ref.name} not found"
        return _Target(label, Condition("Accepted", "False", "TargetNotFound", message))
    if ref.section_name is not None:
        listeners = [s for s in listeners if s.listener.name == ref.section_name]
        if not listeners:
            message = f"Gateway {namespace}/{ref.name} has no listener named {ref.section_name!r}"
            return _Target(label, Condition("Accepted", "False", "TargetNotFound", message))
    return _Target(label, Condition("Accepted", "True", "Accepted"), listeners)


def _settle(policies: list[_Policy]) -> dict[Slot, dict[int, _Policy]]:
    """The winning policy per listener slot and kind; losers learn where and to whom they lost."""
    claims: dict[tuple[Slot, int], list[tuple[_Policy, _Target, ListenerState]]] = {}
    for policy in policies:
        if policy.stage is None:
            continue
        for target in policy.targets:
            for state in target.listeners:
                claims.setdefault((_slot(state), policy.order), []).append((policy, target, state))
    winners: dict[Slot, dict[int, _Policy]] = {}
    for (slot, order), entries in claims.items():
        winner = min((p for p, _, _ in entries), key=lambda p: p.precedence)
        winners.setdefault(slot, {})[order] = winner
        for policy, target, state in entries:
            if policy is not winner:
                target.lost[state.label] = f"{winner.namespace}/{winner.name}"
    return winners


def _slot(state: ListenerState) -> Slot:
    return (state.listener.port, host_key(state.listener.hostname))


def _port_stages(
    states: Listeners, winners: dict[Slot, dict[int, _Policy]]
) -> tuple[dict[int, PortStages], list[dict[str, Any]]]:
    """A PortStages for every port with at least one stage, and its dump view."""
    per_port: dict[int, list[tuple[str | None, tuple[PreRouteStage, ...], list[str]]]] = {}
    for listeners in states.values():
        for state in listeners:
            if not state.served:
                continue
            chosen = [p for _, p in sorted(winners.get(_slot(state), {}).items())]
            stages = tuple(p.stage for p in chosen if p.stage is not None)
            labels = [p.label for p in chosen]
            per_port.setdefault(state.listener.port, []).append(
                (state.listener.hostname, stages, labels)
            )
    out: dict[int, PortStages] = {}
    views: list[dict[str, Any]] = []
    for port, entries in sorted(per_port.items()):
        if not any(stages for _, stages, _ in entries):
            continue
        out[port] = PortStages.of([(hostname, stages) for hostname, stages, _ in entries])
        views.append(
            {
                "port": port,
                "needsBody": out[port].needs_body,
                "listeners": [
                    {"hostname": hostname, "stages": labels} for hostname, _, labels in entries
                ],
            }
        )
    return out, views


def _status(policy: _Policy) -> RouteStatus:
    """The policy's conditions per targetRef, in the shape of route statuses."""
    parents = []
    for target in policy.targets:
        condition = target.condition
        if condition.status == "True" and target.lost:
            lost = ", ".join(f"{where} (to {winner})" for where, winner in target.lost.items())
            if len(target.lost) == len(target.listeners):
                condition = Condition(
                    "Accepted",
                    "False",
                    "Conflicted",
                    f"an older {policy.kind} applies to every targeted listener: {lost}",
                )
            else:
                condition = Condition(
                    "Accepted", "True", "Accepted", f"not applied on listeners {lost}"
                )
        parents.append(ParentStatus(target.label, (condition,)))
    return RouteStatus(policy.kind, policy.namespace, policy.name, tuple(parents))


def _view(policy: _Policy, status: RouteStatus, writer: DumpWriter) -> dict[str, Any]:
    """A policy in /config_dump: what it targets, where it applies, its stage."""
    return {
        "kind": policy.kind,
        "group": policy.group,
        "namespace": policy.namespace,
        "name": policy.name,
        "targets": [
            {
                "target": target.label,
                "appliedTo": [s.label for s in target.listeners if s.label not in target.lost],
                "conditions": [condition_view(c) for c in parent.conditions],
            }
            for target, parent in zip(policy.targets, status.parents, strict=True)
        ],
        "stage": writer.value(policy.stage) if policy.stage is not None else None,
    }


def _invalid(message: str) -> Condition:
    return Condition("Accepted", "False", "Invalid", message)


def _age(raw: Mapping[str, Any]) -> float:
    """creationTimestamp as epoch seconds (YAML may have parsed it); unstamped sorts last."""
    metadata = raw.get("metadata")
    stamp = metadata.get("creationTimestamp") if isinstance(metadata, Mapping) else None
    if isinstance(stamp, str):
        try:
            stamp = datetime.fromisoformat(stamp)
        except ValueError:
            return math.inf
    if not isinstance(stamp, datetime):
        return math.inf
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=UTC)
    return stamp.timestamp()
