"""InferencePool status: a parent per Gateway whose accepted routes reference the pool.

Per parent, ``Accepted`` (True, reason ``Accepted``) and ``ResolvedRefs`` (True; False with
``InvalidExtensionRef`` when ``endpointPickerRef`` names no Service of the pool's namespace). A
pool no accepted route references has no parents, as the spec has it. Shown by ``ambient check``,
``/routes`` and ``/config_dump`` (with the pool's endpoints, objectives and picker settings).

An InferenceModelRewrite's parent is its pool: ``Accepted`` True and ``ResolvedRefs`` True, or
False with ``PoolNotFound`` when ``poolRef`` names no InferencePool of the rewrite's namespace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gateway.compile.reports import BackendReference, PluginReport
from gateway.config.resources import ResourceSet
from gateway.snapshot import Condition, ParentStatus, RouteStatus
from inference_ext.api import (
    POOL_GROUP,
    X_GROUP,
    InferenceModelRewrite,
    InferencePool,
    InferencePoolAlpha,
    pool_spec,
)
from inference_ext.pool import pool_view


def pool_report(resources: ResourceSet, references: Sequence[BackendReference]) -> PluginReport:
    """Every pool's status and its part of ``/config_dump``."""
    statuses: list[RouteStatus] = []
    views: list[dict[str, Any]] = []
    for group in (POOL_GROUP, X_GROUP):
        for (namespace, name), obj in sorted(
            resources.typed_objects.get((group, "InferencePool"), {}).items()
        ):
            if not isinstance(obj, InferencePool | InferencePoolAlpha):
                continue
            spec = pool_spec(obj)
            gateways = sorted(
                {
                    gateway
                    for ref in references
                    if (ref.group, ref.kind, ref.namespace, ref.name)
                    == (group, "InferencePool", namespace, name)
                    for gateway in ref.gateways
                }
            )
            resolved = Condition("ResolvedRefs", "True", "ResolvedRefs")
            picker = spec.picker
            if (
                picker is not None
                and resources.find("", picker.kind, namespace, picker.name) is None
            ):
                resolved = Condition(
                    "ResolvedRefs",
                    "False",
                    "InvalidExtensionRef",
                    f"endpointPickerRef {picker.kind} {namespace}/{picker.name} not found",
                )
            parents = tuple(
                ParentStatus(gateway, (Condition("Accepted", "True", "Accepted"), resolved))
                for gateway in gateways
            )
            statuses.append(RouteStatus("InferencePool", namespace, name, parents))
            view = pool_view(resources, spec)
            config = view.config
            views.append(
                {
                    "pool": f"{namespace}/{name}",
                    "apiVersion": f"{group}/{spec.version}",
                    "selector": dict(spec.selector),
                    "targetPorts": list(spec.ports),
                    "appProtocol": "kubernetes.io/h2c" if spec.h2c else "http",
                    "endpoints": list(view.endpoints),
                    "objectives": dict(view.objectives),
                    "endpointPicker": (
                        {
                            "service": f"{namespace}/{picker.name}",
                            "port": picker.port,
                            "failureMode": picker.failure_mode,
                        }
                        if picker
                        else "in-process"
                    ),
                    "scorers": {
                        "queue": config.weights.queue,
                        "kvCache": config.weights.kv_cache,
                        "prefixCache": config.weights.prefix_cache,
                        "lora": config.weights.lora,
                        "inflight": config.weights.inflight,
                    },
                    "scrapeInterval": config.scrape_interval,
                    "parents": gateways,
                }
            )
    rewrites = rewrite_statuses(resources)
    return PluginReport(statuses + rewrites, {"pools": views})


def rewrite_statuses(resources: ResourceSet) -> list[RouteStatus]:
    """Each InferenceModelRewrite's status, its pool as the parent."""
    pools = {
        (namespace, name)
        for group in (POOL_GROUP, X_GROUP)
        for namespace, name in resources.typed_objects.get((group, "InferencePool"), {})
    }
    statuses = []
    for (namespace, name), obj in sorted(
        resources.typed_objects.get((X_GROUP, "InferenceModelRewrite"), {}).items()
    ):
        if not isinstance(obj, InferenceModelRewrite):
            continue
        pool = obj.spec.pool_ref.name
        resolved = Condition("ResolvedRefs", "True", "ResolvedRefs")
        if (namespace, pool) not in pools:
            resolved = Condition(
                "ResolvedRefs",
                "False",
                "PoolNotFound",
                f"poolRef InferencePool {namespace}/{pool} not found",
            )
        accepted = Condition("Accepted", "True", "Accepted")
        parent = ParentStatus(f"{namespace}/{pool}", (accepted, resolved))
        statuses.append(RouteStatus("InferenceModelRewrite", namespace, name, (parent,)))
    return statuses
