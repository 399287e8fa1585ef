"""Leader election over a Lease in the API server double (a stand-in for kube-apiserver)."""

from __future__ import annotations

import asyncio

from kubernetes import client

from cluster.lease import LeaderElector, LeaseOptions
from tests.fixtures.cluster_objects import eventually
from tests.fixtures.kube_api import KubeApiServer


def _elector(kube: client.ApiClient, identity: str) -> LeaderElector:
    return LeaderElector(kube, LeaseOptions("default", "test", identity, 0.5, 0.05))


async def test_one_of_two_candidates_leads_and_a_silent_leader_is_replaced(
    kube_api: KubeApiServer, kube: client.ApiClient
) -> None:
    a, b = _elector(kube, "a"), _elector(kube, "b")
    tasks = {name: asyncio.ensure_future(e.run()) for name, e in (("a", a), ("b", b))}
    try:
        await eventually(lambda: a.leader or b.leader, what="a leader")
        await asyncio.sleep(0.3)  # several renew periods: the other must not take over
        assert a.leader != b.leader
        leader, follower = (a, b) if a.leader else (b, a)
        lease = kube_api.get("coordination.k8s.io", "leases", "default", "test") or {}
        assert lease["spec"]["holderIdentity"] == leader.options.identity
        # The leader stops renewing without releasing (a crash): the follower waits it out.
        tasks[leader.options.identity].cancel()
        took = await eventually(lambda: follower.leader, what="takeover")
        assert took > 0.3
        lease = kube_api.get("coordination.k8s.io", "leases", "default", "test") or {}
        assert lease["spec"]["holderIdentity"] == follower.options.identity
        assert lease["spec"]["leaseTransitions"] == 1
    finally:
        for task in tasks.values():
            task.cancel()
