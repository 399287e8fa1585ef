"""The objects the informers read, by scope, and whether anything that matters changed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from cluster.informer import Obj, Scope, Sink

Key = tuple[str, str]  # (namespace, name); the namespace is "" for cluster-scoped objects

# What a write by a controller changes without changing what the object asks for.
_VOLATILE_METADATA = ("resourceVersion", "managedFields", "generation")


def object_key(obj: Obj) -> Key:
    """(namespace, name) of an object."""
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def intent(obj: Obj) -> Any:
    """An object without its status and volatile metadata: what a change must touch to count
    (save what a Pod's status tells its readers)."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in _VOLATILE_METADATA}
    return meta, {k: v for k, v in obj.items() if k not in ("metadata", "status")}, _read(obj)


def _read(obj: Obj) -> Any:
    """The status fields something here reads as input: a Pod's IP, phase and readiness, which
    the kubelet writes after the Pod is created (the mesh's workloads, inference pools'
    endpoints). Other statuses are outputs (ours among them) and do not count."""
    if obj.get("kind") != "Pod" or obj.get("apiVersion") != "v1":
        return None
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    ready = next((c.get("status") for c in conditions if c.get("type") == "Ready"), None)
    return status.get("podIP"), status.get("phase"), ready


def _group_kind(scope: Scope) -> tuple[str, str]:
    return scope.resource.group, scope.resource.kind


class ObjectCache(Sink):
    """Objects per scope; ``changed`` is set when an object's spec, labels or existence changed
    (a status-only write, such as our own, does not set it)."""

    def __init__(self) -> None:
        self.objects: dict[Scope, dict[Key, Obj]] = {}
        # The scopes of each (group, kind): ``get`` runs once per route in a status pass.
        self._scopes: dict[tuple[str, str], list[Scope]] = {}
        self.changed = asyncio.Event()
        self.events = 0  # every event received, status-only ones included

    def replace(self, scope: Scope, items: list[Obj]) -> None:
        """Take the complete set of a scope (after a list)."""
        old = self.objects.get(scope, {})
        new = {object_key(o): o for o in items}
        if old.keys() != new.keys() or any(intent(old[k]) != intent(new[k]) for k in new):
            self.changed.set()
        if scope not in self.objects:
            self._add_scope(scope)
        self.objects[scope] = new

    def event(self, scope: Scope, kind: str, obj: Obj) -> None:
        """Apply one watch event."""
        self.events += 1
        objects = self.objects.get(scope)
        if objects is None:
            objects = self.objects[scope] = {}
            self._add_scope(scope)
        key = object_key(obj)
        if kind == "DELETED":
            if objects.pop(key, None) is not None:
                self.changed.set()
            return
        old = objects.get(key)
        objects[key] = obj
        if old is None or intent(old) != intent(obj):
            self.changed.set()

    def forget(self, scope: Scope) -> None:
        """Drop a scope no longer watched."""
        if scope in self.objects:
            self._scopes[_group_kind(scope)].remove(scope)
        if self.objects.pop(scope, None):
            self.changed.set()

    def _add_scope(self, scope: Scope) -> None:
        self._scopes.setdefault(_group_kind(scope), []).append(scope)

    def get(self, group: str, kind: str, namespace: str, name: str) -> Obj | None:
        """The latest copy of an object, from whichever scope holds it."""
        for scope in self._scopes.get((group, kind), ()):
            found = self.objects[scope].get((namespace, name))
            if found is not None:
                return found
        return None

    def all(self) -> Iterator[tuple[Scope, Obj]]:
        """Every object with its scope."""
        for scope, objects in self.objects.items():
            for obj in objects.values():
                yield scope, obj
