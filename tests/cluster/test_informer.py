"""An informer against an API server that is down, then up: it backs off (with jitter) instead
of hammering it, and syncs once it answers. tests/fixtures/kube_api.py stands in for
kube-apiserver (none can run here)."""

from __future__ import annotations

import asyncio
import json

from kubernetes import client

from cluster.cache import ObjectCache
from cluster.informer import Informer, InformerOptions, Scope
from cluster.resources import discover
from tests.fixtures.cluster_objects import eventually, service
from tests.fixtures.kube_api import KubeApiServer


async def test_an_informer_backs_off_while_the_server_is_down_and_syncs_after(
    kube_api: KubeApiServer, kube: client.ApiClient
) -> None:
    (services,) = discover(kube, {("", "Service"): ["v1"]}).values()
    kube_api.apply(service("one"))
    kube_api.set_down(True)
    cache = ObjectCache()
    informer = Informer(
        kube,
        Scope(services),
        cache,
        asyncio.get_running_loop(),
        InformerOptions(backoff_initial=0.05, backoff_max=0.4),
    )
    before = len(kube_api.requests)
    informer.start()
    try:
        await asyncio.sleep(1.5)  # the window being measured, not a synchronisation
        attempts = len(kube_api.requests) - before
        # Without back-off a loopback list fails in about a millisecond: hundreds of tries.
        assert 2 <= attempts <= 30, attempts
        assert not informer.synced.is_set()
        kube_api.set_down(False)
        await asyncio.wait_for(informer.synced.wait(), 5)
        await eventually(lambda: bool(cache.objects.get(Scope(services))), what="the Service")
        assert set(cache.objects[Scope(services)]) == {("default", "one")}
    finally:
        informer.stop()


async def test_listed_objects_get_the_type_kube_apiserver_leaves_out_of_list_items(
    kube_api: KubeApiServer, kube: client.ApiClient
) -> None:
    kube_api.apply(service("one"))
    raw = client.CoreV1Api(kube).list_namespaced_service("default", _preload_content=False)
    (item,) = json.loads(raw.data)["items"]
    assert "kind" not in item and "apiVersion" not in item  # the double, as the real server
    (services,) = discover(kube, {("", "Service"): ["v1"]}).values()
    cache = ObjectCache()
    informer = Informer(kube, Scope(services), cache, asyncio.get_running_loop())
    informer.start()
    try:
        await asyncio.wait_for(informer.synced.wait(), 5)
        kube_api.apply(service("two"))  # and one arriving by the watch
        await eventually(lambda: len(cache.objects[Scope(services)]) == 2, what="the watch")
        assert {(o["apiVersion"], o["kind"]) for _, o in cache.all()} == {("v1", "Service")}
    finally:
        informer.stop()


async def test_a_pods_ip_phase_and_readiness_count_as_changes_other_status_does_not(
    kube: client.ApiClient,
) -> None:
    """The kubelet writes them after the Pod exists (a mesh workload's IP, an inference pool
    endpoint's readiness); a Gateway's status is what we write ourselves."""
    (pods,) = discover(kube, {("", "Pod"): ["v1"]}).values()
    cache = ObjectCache()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"}}
    cache.replace(Scope(pods), [{**pod, "status": {"phase": "Pending"}}])
    for status in (
        {"phase": "Pending", "podIP": "10.0.0.1"},
        {"phase": "Running", "podIP": "10.0.0.1"},
        {
            "phase": "Running",
            "podIP": "10.0.0.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        },
    ):
        cache.changed.clear()
        cache.event(Scope(pods), "MODIFIED", {**pod, "status": status})
        assert cache.changed.is_set(), status
    cache.changed.clear()
    restarted = {**status, "containerStatuses": [{"name": "c", "restartCount": 1}]}
    cache.event(Scope(pods), "MODIFIED", {**pod, "status": restarted})
    assert not cache.changed.is_set()
    gateway = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": pod["metadata"],
    }
    (gateways,) = discover(kube, {("gateway.networking.k8s.io", "Gateway"): ["v1"]}).values()
    cache.replace(Scope(gateways), [gateway])
    cache.changed.clear()
    cache.event(
        Scope(gateways), "MODIFIED", {**gateway, "status": {"conditions": [{"type": "Accepted"}]}}
    )
    assert not cache.changed.is_set()
