"""InferencePool status in cluster mode: the leader writes one ``parents[]`` entry per Gateway
whose accepted routes use the pool, and takes it away when none does any more. The API server is
``tests.fixtures.kube_api``'s double, standing in for kube-apiserver (which cannot run here)."""

from __future__ import annotations

from typing import Any

from inference_ext.pool import Pools
from tests.cluster.conftest import ClusterGateway
from tests.fixtures.cluster_objects import eventually, gateway, gateway_class, http_route, service
from tests.fixtures.gateway_process import free_port
from tests.fixtures.inference import pools  # noqa: F401  (fixture: the inference plugin loaded)
from tests.fixtures.kube_api import GATEWAY, Kind, KubeApiServer

POOLS = "inference.networking.k8s.io"


def pool() -> dict[str, Any]:
    return {
        "apiVersion": f"{POOLS}/v1",
        "kind": "InferencePool",
        "metadata": {"name": "llama", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "vllm"}}, "targetPorts": [{"number": 8000}]},
    }


def parents(api: KubeApiServer) -> list[dict[str, Any]]:
    obj = api.get(POOLS, "inferencepools", "default", "llama") or {}
    return list((obj.get("status") or {}).get("parents") or [])


async def test_a_pool_used_by_a_route_gets_its_gateway_as_parent_and_loses_it_after(
    pools: Pools,  # noqa: F811
    kube_api: KubeApiServer,
    cluster_gateway: ClusterGateway,
) -> None:
    kube_api.serve(Kind(POOLS, "v1", "InferencePool", "inferencepools", status=True))
    kube_api.apply(gateway_class())
    kube_api.apply(gateway(free_port()))
    kube_api.apply(pool())
    kube_api.apply(service("plain"))
    ref = {"group": POOLS, "kind": "InferencePool", "name": "llama"}
    route = http_route("r1", "/", "plain")
    route["spec"]["rules"][0]["backendRefs"] = [ref]
    kube_api.apply(route)
    await cluster_gateway()

    await eventually(lambda: len(parents(kube_api)) == 1, what="the pool's parent written")
    (parent,) = parents(kube_api)
    assert parent["parentRef"] == {
        "group": GATEWAY,
        "kind": "Gateway",
        "namespace": "default",
        "name": "gw",
    }
    assert parent["controllerName"] == "ambient.dev/gateway-controller"
    conditions = {c["type"]: (c["status"], c["reason"]) for c in parent["conditions"]}
    assert conditions == {
        "Accepted": ("True", "Accepted"),
        "ResolvedRefs": ("True", "ResolvedRefs"),
    }

    kube_api.apply(http_route("r1", "/", "plain"))  # the route no longer uses the pool
    await eventually(lambda: parents(kube_api) == [], what="the pool's parent taken away")
