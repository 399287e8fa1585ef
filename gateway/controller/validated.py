"""Validation once per object version: a recompile re-validates only what changed.

Each object is validated on its own by the file-mode loader (``load_objects``) and kept by its
uid and resourceVersion; the set handed to the compiler is these pieces merged. Validated models
are immutable, so sharing them between snapshots is safe. A Gateway API object whose new version
differs only in status (the controller's own status writes) keeps its validated piece: the
compile reads none of those statuses, and the same models let it reuse the routes' compiled
rules (``gateway.compile.memo``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from cluster.cache import intent
from gateway.config import ResourceSet, load_objects
from gateway.config.gc_pause import paused_gc
from gateway.config.models import GATEWAY_GROUP

Obj = dict[str, Any]


def _identity(obj: Obj) -> tuple[str, str, str, str]:
    meta = obj.get("metadata") or {}
    return (
        str(obj.get("apiVersion")),
        str(obj.get("kind")),
        str(meta.get("namespace") or ""),
        str(meta.get("name")),
    )


class ValidatedObjects:
    """Per-object validated ResourceSets, keyed by identity and resourceVersion."""

    def __init__(self, source: str) -> None:
        self.source = source
        # identity -> (resourceVersion, the object validated, its piece)
        self._pieces: dict[tuple[str, str, str, str], tuple[str, Obj, ResourceSet]] = {}
        self.validated = 0  # objects validated so far (a cache miss each)

    def resources(self, objects: Iterable[Obj]) -> ResourceSet:
        """The merged, validated set of ``objects`` (only new versions are validated)."""
        with paused_gc():
            return self._resources(objects)

    def _resources(self, objects: Iterable[Obj]) -> ResourceSet:
        pieces: dict[tuple[str, str, str, str], tuple[str, Obj, ResourceSet]] = {}
        merged = ResourceSet()
        for obj in objects:
            key = _identity(obj)
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            cached = self._pieces.get(key)
            if cached is None or not version:
                cached = (version, obj, load_objects([obj], self.source))
                self.validated += 1
            elif cached[0] != version:
                if _status_only(key[0], cached[1], obj):
                    cached = (version, cached[1], cached[2])
                else:
                    cached = (version, obj, load_objects([obj], self.source))
                    self.validated += 1
            pieces[key] = cached
            merged.merge(cached[2])
        self._pieces = pieces
        return merged


def _status_only(api_version: str, old: Obj, new: Obj) -> bool:
    """A Gateway API object changed only in status and volatile metadata (a status write)."""
    return api_version.rpartition("/")[0] == GATEWAY_GROUP and intent(old) == intent(new)
