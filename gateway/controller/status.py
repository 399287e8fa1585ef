"""The status of each object, as the Gateway API spec gives it, from a compiled snapshot.

GatewayClass ``Accepted``; Gateway ``Accepted``, ``Programmed``, per-listener conditions and
``attachedRoutes``; route ``parents[]`` entries for our Gateways (other controllers' entries are
kept); and the statuses plugins publish at run time. A condition keeps its
``lastTransitionTime`` while its status stays the same, so an unchanged status is byte-for-byte
the one the object has and is not written again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Set
from datetime import UTC, datetime
from typing import Any

from gateway.config.models import GATEWAY_GROUP
from gateway.controller.options import CONTROLLER_NAME
from gateway.snapshot import Condition, ParentStatus

Obj = dict[str, Any]
ROUTE_KINDS = ("HTTPRoute", "GRPCRoute")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def conditions(
    old: Iterable[Mapping[str, Any]] | None, new: Iterable[Condition], generation: int
) -> list[dict[str, Any]]:
    """Conditions as the API shows them, keeping each transition time while its status holds."""
    before = {c.get("type"): c for c in old or ()}
    out = []
    for condition in new:
        previous = before.get(condition.type)
        since = (
            previous["lastTransitionTime"]
            if previous and previous.get("status") == condition.status
            else _now()
        )
        out.append(
            {
                "type": condition.type,
                "status": condition.status,
                "reason": condition.reason,
                "message": condition.message[:32768],
                "lastTransitionTime": since,
                "observedGeneration": generation,
            }
        )
    return out


def _generation(obj: Obj) -> int:
    return int((obj.get("metadata") or {}).get("generation") or 0)


def gateway_class_status(obj: Obj) -> dict[str, Any]:
    """Accepted=True for a class naming our controller."""
    status = dict(obj.get("status") or {})
    accepted = Condition("Accepted", "True", "Accepted", f"handled by {CONTROLLER_NAME}")
    status["conditions"] = conditions(status.get("conditions"), [accepted], _generation(obj))
    return status


def _supported_kinds(listener: Mapping[str, Any]) -> list[dict[str, str]]:
    allowed = ((listener.get("allowedRoutes") or {}).get("kinds")) or []
    kinds = [k.get("kind") for k in allowed if (k.get("group") or GATEWAY_GROUP) == GATEWAY_GROUP]
    if not allowed:
        kinds = list(ROUTE_KINDS) if listener.get("protocol") in ("HTTP", "HTTPS") else []
    return [{"group": GATEWAY_GROUP, "kind": k} for k in kinds if k in ROUTE_KINDS]


def gateway_status(obj: Obj, views: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Gateway and listener conditions from the snapshot's listener views of this Gateway."""
    status = dict(obj.get("status") or {})
    generation = _generation(obj)
    old_listeners = {entry.get("name"): entry for entry in status.get("listeners") or []}
    spec_listeners = {
        entry.get("name"): entry for entry in (obj.get("spec") or {}).get("listeners") or []
    }
    listeners = []
    for view in views:
        name = view["name"]
        listeners.append(
            {
                "name": name,
                "supportedKinds": _supported_kinds(spec_listeners.get(name) or {}),
                "attachedRoutes": view["attachedRoutes"],
                "conditions": conditions(
                    (old_listeners.get(name) or {}).get("conditions"),
                    [
                        Condition(c["type"], c["status"], c["reason"], c["message"])
                        for c in view["conditions"]
                    ],
                    generation,
                ),
            }
        )
    states = [{c["type"]: c["status"] for c in view["conditions"]} for view in views]
    if all(s.get("Accepted") == "True" for s in states):
        accepted = Condition("Accepted", "True", "Accepted")
    else:
        accepted = Condition(
            "Accepted", "False", "ListenersNotValid", "one or more listeners are not valid"
        )
    if any(s.get("Programmed") == "True" for s in states):
        programmed = Condition("Programmed", "True", "Programmed")
    else:
        programmed = Condition("Programmed", "False", "Invalid", "no listener is programmed")
    status["conditions"] = conditions(status.get("conditions"), [accepted, programmed], generation)
    status["listeners"] = listeners
    return status


def _names_gateway(ref: Mapping[str, Any], namespace: str, ours: Set[tuple[str, str]]) -> bool:
    if (ref.get("group") or GATEWAY_GROUP) != GATEWAY_GROUP or (
        ref.get("kind") or "Gateway"
    ) != "Gateway":
        return False
    return (ref.get("namespace") or namespace, ref.get("name")) in ours


def route_status(
    obj: Obj, parents: tuple[ParentStatus, ...], ours: Set[tuple[str, str]]
) -> dict[str, Any] | None:
    """``parents[]`` with one entry per parentRef naming one of our Gateways (None: no such ref).

    ``parents`` are the compiled parent statuses in parentRef order; a single ``-`` parent (the
    object was rejected at load) gives its conditions to each of our parentRefs.
    """
    meta = obj.get("metadata") or {}
    namespace = str(meta.get("namespace") or "default")
    refs = list((obj.get("spec") or {}).get("parentRefs") or [])
    if len(parents) == 1 and parents[0].parent == "-":
        compiled = [parents[0].conditions] * len(refs)
    elif len(parents) == len(refs):
        compiled = [p.conditions for p in parents]
    else:
        return None
    status = dict(obj.get("status") or {})
    old = status.get("parents") or []
    kept = [p for p in old if p.get("controllerName") != CONTROLLER_NAME]
    mine = {
        _ref_key(p.get("parentRef") or {}, namespace): p
        for p in old
        if p.get("controllerName") == CONTROLLER_NAME
    }
    entries = []
    for ref, conds in zip(refs, compiled, strict=True):
        if not _names_gateway(ref, namespace, ours):
            continue
        previous = mine.get(_ref_key(ref, namespace)) or {}
        entries.append(
            {
                "parentRef": ref,
                "controllerName": CONTROLLER_NAME,
                "conditions": conditions(previous.get("conditions"), conds, _generation(obj)),
            }
        )
    if not entries and not mine:
        return None
    status["parents"] = kept + entries
    return status


def pool_status(obj: Obj, parents: tuple[ParentStatus, ...]) -> dict[str, Any] | None:
    """An InferencePool's ``parents[]``: one entry per Gateway whose accepted routes use it
    (``parents`` name them ``namespace/name``); entries of other controllers are kept, ours
    for Gateways that no longer use the pool are dropped (None: nothing to write)."""
    status = dict(obj.get("status") or {})
    old = status.get("parents") or []
    kept = [p for p in old if p.get("controllerName") not in (None, CONTROLLER_NAME)]
    mine = {
        ((p.get("parentRef") or {}).get("namespace"), (p.get("parentRef") or {}).get("name")): p
        for p in old
        if p.get("controllerName") in (None, CONTROLLER_NAME)
    }
    entries = []
    for parent in parents:
        namespace, _, name = parent.parent.partition("/")
        previous = mine.get((namespace, name)) or {}
        ref = {"group": GATEWAY_GROUP, "kind": "Gateway", "namespace": namespace, "name": name}
        entries.append(
            {
                "parentRef": ref,
                "controllerName": CONTROLLER_NAME,
                "conditions": conditions(
                    previous.get("conditions"), parent.conditions, _generation(obj)
                ),
            }
        )
    if not entries and not mine:
        return None
    status["parents"] = kept + entries
    return status


def live_status(obj: Obj, published: Mapping[str, Any]) -> dict[str, Any]:
    """A status a plugin published at run time (``gateway.live_status``) over the object's:
    its fields replace the object's, its conditions get their transition times."""
    status = {**(obj.get("status") or {}), **published}
    if "conditions" in published:
        status["conditions"] = conditions(
            (obj.get("status") or {}).get("conditions"),
            [
                Condition(c["type"], c["status"], c["reason"], c.get("message", ""))
                for c in published["conditions"]
            ],
            _generation(obj),
        )
    return status


def _ref_key(ref: Mapping[str, Any], namespace: str) -> tuple[Any, ...]:
    return (
        ref.get("namespace") or namespace,
        ref.get("name"),
        ref.get("sectionName"),
        ref.get("port"),
    )
