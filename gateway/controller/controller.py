"""The controller in the gateway process: the Kubernetes API in, the same snapshot out.

Informers (``cluster.informer``) keep every watched kind in an ObjectCache. Changes within
``coalesce`` seconds make one recompile, through the same loader and compiler as file mode and
the same ConfigReloader swap. Only Gateways whose GatewayClass names our controllerName are
served. Only the Secrets and ConfigMaps something references are read (an informer each, by
name). The replica holding the Lease writes statuses — the snapshot's, and those plugins publish
at run time (``gateway.live_status``); every replica serves traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import tenacity
from kubernetes import client

from cluster.cache import ObjectCache
from cluster.client import connect
from cluster.informer import Informer, InformerOptions, Obj, Scope
from cluster.lease import LeaderElector, LeaseOptions
from cluster.resources import Resource, discover
from cluster.status import StatusOf, StatusWriter
from gateway.compile import compile_snapshot
from gateway.compile.memo import CompileMemo
from gateway.config.gc_pause import freeze_survivors
from gateway.config.models import GATEWAY_GROUP
from gateway.controller.kinds import REFERENCED_KINDS, listed_kinds, watched_kinds
from gateway.controller.options import CONTROLLER_NAME, ClusterOptions
from gateway.controller.rbac import STATUS_POOL_KINDS
from gateway.controller.references import referenced
from gateway.controller.status import (
    ROUTE_KINDS,
    gateway_class_status,
    gateway_status,
    live_status,
    pool_status,
    route_status,
)
from gateway.controller.validated import ValidatedObjects
from gateway.live_status import LiveStatuses, ObjectRef, Status
from gateway.reload import ConfigReloader
from gateway.snapshot import Snapshot

log = logging.getLogger("gateway.controller")

SOURCE = "kubernetes"
StatusKey = tuple[str, str, str]  # (kind, namespace, name)
Write = tuple[StatusKey, Resource, Obj, StatusOf]


def _group_kind(obj: Obj) -> tuple[str, str]:
    return str(obj.get("apiVersion", "")).rpartition("/")[0], str(obj.get("kind", ""))


def served_objects(objects: list[Obj]) -> list[Obj]:
    """The objects to compile: all but the Gateways of classes another controller handles."""
    classes = {
        (o.get("metadata") or {}).get("name")
        for o in objects
        if _group_kind(o) == (GATEWAY_GROUP, "GatewayClass")
        and (o.get("spec") or {}).get("controllerName") == CONTROLLER_NAME
    }
    return [
        o
        for o in objects
        if _group_kind(o) != (GATEWAY_GROUP, "Gateway")
        or (o.get("spec") or {}).get("gatewayClassName") in classes
    ]


class ClusterController:
    """Feeds the gateway's ConfigReloader from the Kubernetes API and writes statuses back."""

    def __init__(
        self,
        options: ClusterOptions,
        reloader: ConfigReloader,
        statuses: LiveStatuses | None = None,
    ) -> None:
        self.options = options
        self.reloader = reloader
        self.statuses = statuses or LiveStatuses()
        self.cache = ObjectCache()
        self.compiles = 0
        self.status_passes = 0  # completed passes over every object's status (as leader)
        self.passed_compile = 0  # the compile the last completed status pass was made for
        self.informers: dict[Scope, Informer] = {}
        self.writer: StatusWriter | None = None
        self.elector: LeaderElector | None = None
        self._api: client.ApiClient | None = None
        self._resources: dict[tuple[str, str], Resource] = {}
        self._compiled: list[Obj] = []
        self.validated = ValidatedObjects(SOURCE)
        self.memo = CompileMemo()  # a route change recompiles only that route's rules
        self._status_due = asyncio.Event()
        # Per object: the resourceVersion and status inputs of its last status pass; an object
        # whose both are unchanged is not looked at again (10,000 routes, one changed).
        self._passed: dict[StatusKey, tuple[Any, ...]] = {}
        self._live_passed: dict[ObjectRef, tuple[Any, ...]] = {}  # the same for live statuses
        self._tasks: list[asyncio.Task[None]] = []
        self.statuses.record_with(self._recorded, self._status_due.set, lambda: self.leader)

    @property
    def leader(self) -> bool:
        """Whether this replica writes statuses now."""
        return self.elector is not None and self.elector.leader

    async def start(self) -> None:
        """Connect, find the served kinds, list them all and compile the first snapshot."""
        options = self.options
        self._api = await asyncio.to_thread(connect, options.kubeconfig)
        self.writer = StatusWriter(self._api)
        retrying = tenacity.AsyncRetrying(
            wait=tenacity.wait_random_exponential(
                multiplier=options.backoff_initial, max=options.backoff_max
            ),
            before_sleep=lambda state: log.warning(
                "discovery failed (%s), retrying", state.outcome and state.outcome.exception()
            ),
        )
        self._resources = await retrying(asyncio.to_thread, discover, self._api, watched_kinds())
        for (group, kind), resource in sorted(self._resources.items()):
            if (group, kind) not in REFERENCED_KINDS:
                self._inform(Scope(resource))
        missing = sorted(set(listed_kinds()) - set(self._resources))
        if missing:
            log.warning(
                "not served by the API server, not watched: %s",
                ", ".join(f"{k} ({g or 'core'})" for g, k in missing),
            )
        await self._synced()
        self._follow_references(self._objects())
        await self._synced()
        self.cache.changed.clear()
        await self._recompile("initial sync")
        identity = options.identity or f"{socket.gethostname()}-{os.getpid()}"
        self.elector = LeaderElector(
            self._api,
            LeaseOptions(
                options.lease_namespace,
                options.lease_name,
                identity,
                options.lease_duration,
                options.lease_renew,
            ),
            on_change=self._on_leader,
        )

    def _on_leader(self, leader: bool) -> None:
        if leader:
            self._passed = {}  # a new leader checks every status once
            self._live_passed.clear()
            self._status_due.set()

    def _recorded(self, ref: ObjectRef) -> Status | None:
        """The status the API holds for ``ref`` (the cache's copy)."""
        obj = self.cache.get(ref.group, ref.kind, ref.namespace, ref.name)
        status = (obj or {}).get("status")
        return dict(status) if isinstance(status, dict) else None

    def _inform(self, scope: Scope) -> None:
        assert self._api is not None
        informer = Informer(
            self._api,
            scope,
            self.cache,
            asyncio.get_running_loop(),
            InformerOptions(
                watch_timeout=self.options.watch_timeout,
                backoff_initial=self.options.backoff_initial,
                backoff_max=self.options.backoff_max,
            ),
        )
        self.informers[scope] = informer
        informer.start()

    async def _synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers.values()))

    def _objects(self) -> list[Obj]:
        return [obj for _, obj in self.cache.all()]

    def _follow_references(self, objects: list[Obj]) -> None:
        """Watch exactly the referenced Secrets and ConfigMaps (each by name)."""
        wanted: set[Scope] = set()
        for kind, namespace, name in referenced(objects):
            resource = self._resources.get(("", kind))
            if resource is not None:
                wanted.add(Scope(resource, namespace, f"metadata.name={name}"))
        for scope in [s for s in self.informers if s.field_selector and s not in wanted]:
            self.informers.pop(scope).stop()
            self.cache.forget(scope)
        for scope in wanted - set(self.informers):
            self._inform(scope)

    async def _recompile(self, reason: str) -> None:
        objects = served_objects(self._objects())
        self.compiles += 1

        def build(version: int) -> Snapshot:
            return compile_snapshot(self.validated.resources(objects), version, self.memo)

        if await self.reloader.reload(reason, build=build):
            freeze_survivors()  # the snapshot swapped out is gone: keep the rest out of the GC
            self._compiled = objects
            self._status_due.set()
        self._follow_references(objects)

    async def run(self) -> None:
        """Recompile on changes (coalesced), campaign for the Lease, write statuses as leader."""
        assert self.elector is not None
        self._tasks = [
            asyncio.ensure_future(self.elector.run()),
            asyncio.ensure_future(self._write_statuses_forever()),
        ]
        try:
            while True:
                await self.cache.changed.wait()
                await asyncio.sleep(self.options.coalesce)  # gather the rest of a burst
                self.cache.changed.clear()
                await self._recompile("cluster change")
        finally:
            for task in self._tasks:
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def stop(self) -> None:
        """Stop the informers and give up the Lease."""
        for informer in self.informers.values():
            informer.stop()
        if self.elector is not None:
            await self.elector.release()

    async def _write_statuses_forever(self) -> None:
        while True:
            await self._status_due.wait()
            self._status_due.clear()
            if not self.leader:
                continue
            compiles = self.compiles
            writes = await self._status_writes(self.reloader.holder.current)
            writes += self._live_writes()
            await asyncio.to_thread(self._write_all, writes)
            self.status_passes += 1
            self.passed_compile = compiles

    def _write_all(self, writes: list[Write]) -> None:
        assert self.writer is not None
        for key, resource, obj, status_of in writes:
            meta = obj.get("metadata") or {}
            try:
                self.writer.write(resource, obj, status_of)
            except Exception as exc:
                self._passed.pop(key, None)  # try again at the next pass
                self._live_passed.pop(ObjectRef(resource.group, *key), None)
                log.warning(
                    "status of %s %s/%s not written: %s",
                    resource.kind,
                    meta.get("namespace", ""),
                    meta.get("name"),
                    exc,
                )

    async def _status_writes(self, snapshot: Snapshot) -> list[Write]:
        """What to check for the snapshot, with the cache's latest copy of each object: only
        objects whose resourceVersion or compiled status changed since the last pass. The pass
        gives the loop a turn every ``_PASS_SLICE`` statuses: at 10,000 routes it takes 80-160
        ms, which requests (the new routes' first) must not wait behind."""
        out: list[Write] = []
        passed: dict[StatusKey, tuple[Any, ...]] = {}
        before = self._passed  # replaced, not updated, when leadership changes meanwhile

        def check(resource: Resource, obj: Obj, fn: Callable[..., Any], *inputs: Any) -> None:
            meta = obj["metadata"]
            key = (resource.kind, str(meta.get("namespace") or ""), str(meta["name"]))
            memo = (meta.get("resourceVersion"), *inputs)
            passed[key] = memo
            if before.get(key) != memo:
                out.append((key, resource, obj, _bind(fn, *inputs)))

        ours: set[tuple[str, str]] = set()
        views: dict[str, list[Any]] = {}
        for view in snapshot.dump.get("listeners", []):
            views.setdefault(view["gateway"], []).append(view)
        for obj in self._compiled:
            group, kind = _group_kind(obj)
            meta = obj.get("metadata") or {}
            namespace, name = str(meta.get("namespace") or ""), str(meta.get("name"))
            latest = self.cache.get(group, kind, namespace, name)
            resource = self._resources.get((group, kind))
            if latest is None or resource is None or group != GATEWAY_GROUP:
                continue
            if kind == "GatewayClass":
                if (obj.get("spec") or {}).get("controllerName") == CONTROLLER_NAME:
                    check(resource, latest, gateway_class_status)
            elif kind == "Gateway":
                ours.add((namespace, name))
                check(resource, latest, gateway_status, views.get(f"{namespace}/{name}", []))
        for index, status in enumerate(snapshot.statuses):
            if index % _PASS_SLICE == _PASS_SLICE - 1:
                await asyncio.sleep(0)
            if status.kind == "InferencePool":
                # Plugin statuses name a kind, not a group: the pool of that name in either.
                for group, kind in STATUS_POOL_KINDS:
                    latest = self.cache.get(group, kind, status.namespace, status.name)
                    resource = self._resources.get((group, kind))
                    if latest is not None and resource is not None:
                        check(resource, latest, pool_status, status.parents)
                continue
            if status.kind not in ROUTE_KINDS:
                continue
            latest = self.cache.get(GATEWAY_GROUP, status.kind, status.namespace, status.name)
            resource = self._resources.get((GATEWAY_GROUP, status.kind))
            if latest is not None and resource is not None:
                check(resource, latest, route_status, status.parents, frozenset(ours))
        if self._passed is before:
            self._passed = passed
        return out

    def _live_writes(self) -> list[Write]:
        """The statuses plugins published that the objects may not have yet: those published or
        whose object changed since the last pass. An object not in the cache (not created yet,
        its kind not served) is looked at again at the next pass."""
        out: list[Write] = []
        published = self.statuses.published()
        for gone in self._live_passed.keys() - published.keys():
            del self._live_passed[gone]
        for ref, status in published.items():
            latest = self.cache.get(ref.group, ref.kind, ref.namespace, ref.name)
            resource = self._resources.get((ref.group, ref.kind))
            if latest is None or resource is None:
                self._live_passed.pop(ref, None)
                continue
            memo = (latest["metadata"].get("resourceVersion"), status)
            if self._live_passed.get(ref) != memo:
                self._live_passed[ref] = memo
                key = (ref.kind, ref.namespace, ref.name)
                out.append((key, resource, latest, _bind(live_status, status)))
        return out


_PASS_SLICE = 256  # statuses looked at between two turns of the loop in a status pass


def _bind(fn: Callable[..., Any], *args: Any) -> StatusOf:
    """``fn(obj, *args)`` as a function of the object alone."""
    return lambda obj: fn(obj, *args)
