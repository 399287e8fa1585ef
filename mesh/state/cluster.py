"""The mesh state from the Kubernetes API instead of mesh.yaml (``--kubeconfig``/in-cluster).

Same interface as ``MeshWatcher`` (``state``, ``subscribe``, ``start``, ``stop``) plus ``sync``,
awaited once before serving. Informers (``cluster.informer``) keep Namespaces, Pods, Services,
EndpointSlices, AuthorizationPolicies and Gateways (waypoints); changes within ``coalesce``
seconds make one rebuild through ``parse_mesh``, as a file reload does. A state that does not
build keeps the previous one.

A ztunnel reads every Pod, not only its node's: to send HBONE to a Pod on another node it needs
that Pod's service account (the identity to expect) and whether it is enrolled, which neither
Services nor EndpointSlices carry; without them the connection went out in plain text. Istio's
ztunnel holds the same (every workload, from istiod's workload discovery). So Pods are kept
trimmed to what ``parse_mesh`` reads (:func:`trim_pod`): about 3.5 KB each in memory instead
of 37 KB for a typical Pod.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from cluster.cache import ObjectCache
from cluster.client import connect
from cluster.informer import Informer, InformerOptions, Obj, Scope, Sink
from cluster.resources import discover
from mesh.errors import ConfigError
from mesh.state.registry import MeshState, parse_mesh

log = logging.getLogger(__name__)

MESH_KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Namespace"): ("v1",),
    ("", "Pod"): ("v1",),
    ("", "Service"): ("v1",),
    ("discovery.k8s.io", "EndpointSlice"): ("v1",),
    ("security.istio.io", "AuthorizationPolicy"): ("v1", "v1beta1"),
    ("gateway.networking.k8s.io", "Gateway"): ("v1",),
}


_POD_METADATA = ("name", "namespace", "labels", "resourceVersion")
_POD_SPEC = ("serviceAccountName", "nodeName", "hostNetwork")
_POD_STATUS = ("podIP", "phase")


def trim_pod(pod: Obj) -> Obj:
    """A Pod with only what the mesh reads: identity, node, labels, IP, phase, readiness and
    container ports (named target ports). Annotations, managedFields, env, volumes, ... go."""
    meta, spec, status = (pod.get(k) or {} for k in ("metadata", "spec", "status"))
    ready = [
        {"type": "Ready", "status": c.get("status")}
        for c in status.get("conditions") or []
        if c.get("type") == "Ready"
    ]
    containers = [{"ports": c["ports"]} for c in spec.get("containers") or [] if c.get("ports")]
    return {
        "apiVersion": pod.get("apiVersion"),
        "kind": pod.get("kind"),
        "metadata": {k: meta[k] for k in _POD_METADATA if k in meta},
        "spec": {**{k: spec[k] for k in _POD_SPEC if k in spec}, "containers": containers},
        "status": {**{k: status[k] for k in _POD_STATUS if k in status}, "conditions": ready},
    }


class _Trimmed(Sink):
    """Passes what an informer of Pods reads to the cache, each Pod trimmed."""

    def __init__(self, cache: ObjectCache) -> None:
        self.cache = cache

    def replace(self, scope: Scope, items: list[Obj]) -> None:
        self.cache.replace(scope, [trim_pod(o) for o in items])

    def event(self, scope: Scope, kind: str, obj: Obj) -> None:
        self.cache.event(scope, kind, trim_pod(obj))


class ClusterMeshWatcher:
    """Holds the MeshState built from the cluster and swaps it when the cluster changes."""

    def __init__(
        self,
        kubeconfig: str | None,
        trust_domain: str,
        coalesce: float = 0.05,
        informer_options: InformerOptions | None = None,
    ) -> None:
        self.kubeconfig = kubeconfig
        self.trust_domain = trust_domain
        self.coalesce = coalesce
        self.informer_options = informer_options or InformerOptions()
        self.state = MeshState(trust_domain)
        self.cache = ObjectCache()
        self.informers: list[Informer] = []
        self.rebuilds = 0
        self._listeners: list[Callable[[MeshState], None]] = []
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, callback: Callable[[MeshState], None]) -> None:
        """Call ``callback(new_state)`` after every successful rebuild."""
        self._listeners.append(callback)

    def namespaces(self) -> list[str]:
        """The names of the cluster's Namespaces, as the cache has them."""
        return sorted(
            str((obj.get("metadata") or {}).get("name"))
            for _, obj in self.cache.all()
            if obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1"
        )

    async def sync(self) -> None:
        """Connect, list every kind and build the first state (raises ClusterError)."""
        api = await asyncio.to_thread(connect, self.kubeconfig)
        served = await asyncio.to_thread(discover, api, MESH_KINDS)
        loop = asyncio.get_running_loop()
        for _, resource in sorted(served.items()):
            sink: Sink = _Trimmed(self.cache) if resource.kind == "Pod" else self.cache
            informer = Informer(api, Scope(resource), sink, loop, self.informer_options)
            self.informers.append(informer)
            informer.start()
        for group, kind in sorted(set(MESH_KINDS) - set(served)):
            log.warning("%s (%s) is not served by the API server: not watched", kind, group)
        await asyncio.gather(*(i.synced.wait() for i in self.informers))
        self.cache.changed.clear()
        self.rebuild()

    def rebuild(self) -> bool:
        """Build the state from the cached objects now; True when a new state was installed."""
        self.rebuilds += 1
        try:
            state = parse_mesh([obj for _, obj in self.cache.all()], self.trust_domain)
        except ConfigError as exc:
            log.error("mesh state from the cluster rejected, keeping the previous one: %s", exc)
            return False
        self.state = state
        for callback in self._listeners:
            callback(state)
        return True

    async def _run(self) -> None:
        while True:
            await self.cache.changed.wait()
            await asyncio.sleep(self.coalesce)
            self.cache.changed.clear()
            self.rebuild()

    def start(self) -> None:
        """Follow the cluster on the running loop (after ``sync``)."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop following."""
        for informer in self.informers:
            informer.stop()
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
