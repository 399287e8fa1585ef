"""InferenceRollout status in cluster mode: the leader writes the rollout's phase, step, weights
and last analysis to the object, a gateway started afresh (no --state-dir) resumes at the step
the status records, and a replica that does not lead follows it. The API server is
tests/fixtures/kube_api.py's double, standing in for kube-apiserver (which cannot run here);
the analysis queries a Prometheus stand-in."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.server import GatewayProcess
from inference_ext.pool import Pools
from tests.cluster.conftest import ClusterGateway
from tests.fixtures.cluster_objects import eventually
from tests.fixtures.gateway_process import GatewayProcess as GatewayCommand
from tests.fixtures.inference import pools  # noqa: F401  (fixture: the inference plugin loaded)
from tests.fixtures.kube_api import KubeApiServer
from tests.fixtures.prometheus import FakePrometheus, prometheus, vector  # noqa: F401  (fixture)
from tests.fixtures.rollout import rewrite_doc, rollout_doc

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
GROUP = "inference.ambient.dev"
LEASE = "ambient-gateway-controller"


def status(api: KubeApiServer) -> dict[str, Any]:
    obj = api.get(GROUP, "inferencerollouts", "default", "llama-canary") or {}
    return dict(obj.get("status") or {})


def admin(process: GatewayProcess) -> str:
    assert process.options.admin is not None
    host, port = process.options.admin
    return f"http://{host}:{port}/plugins/rollouts/llama-canary"


def apply_rollout(api: KubeApiServer, prometheus: FakePrometheus) -> None:  # noqa: F811
    """The generated CRDs, a rewrite, and a rollout whose one check passes every 50 ms, in steps
    of 1% (99 steps: the test pauses it long before it could succeed)."""
    for name in (f"{GROUP}.yaml", "inference.networking.x-k8s.io.yaml"):
        for crd in yaml.safe_load_all((CRDS / name).read_text()):
            if crd is not None:
                api.apply(crd)  # status subresource and all
    prometheus.steady = (200, vector("0"))  # the canary's error rate: every check passes
    query = f"{{address: '{prometheus.address}', query: q}}"
    check = f"{{name: errors, max: 0.02, prometheus: {query}}}"
    api.apply(yaml.safe_load(rewrite_doc()))
    rollout = rollout_doc(
        metrics=[check], interval="50ms", minRequests=0, stepWeight=1, maxWeight=99
    )
    api.apply(yaml.safe_load(rollout))


async def test_the_rollout_status_shows_its_step_and_a_fresh_gateway_resumes_there(
    pools: Pools,  # noqa: F811
    kube_api: KubeApiServer,
    cluster_gateway: ClusterGateway,
    prometheus: FakePrometheus,  # noqa: F811
) -> None:
    apply_rollout(kube_api, prometheus)
    first = await cluster_gateway("replica-a")
    await eventually(lambda: status(kube_api).get("currentStep", 0) >= 3, what="step 3 written")
    async with httpx.AsyncClient(timeout=2) as http:
        response = await http.post(f"{admin(first)}/pause")
        assert response.status_code == 200, response.text
        step = response.json()["step"]
        await eventually(lambda: status(kube_api).get("phase") == "Paused", what="Paused written")
        written = status(kube_api)
        assert written["currentStep"] == step >= 3
        assert written["canaryWeight"] == step
        assert written["weights"] == [
            {"name": "llama-v1", "weight": 100 - step},
            {"name": "llama-v2", "weight": step},
        ]
        assert written["lastAnalysis"]["verdict"] == "pass"
        assert written["lastAnalysis"]["checks"][0]["value"] == 0
        conditions = {c["type"]: (c["status"], c["reason"]) for c in written["conditions"]}
        assert conditions == {
            "ResolvedRefs": ("True", "ResolvedRefs"),
            "Promoted": ("Unknown", "Paused"),
            "ChecksPassed": ("True", "Passed"),
        }
        assert all(c["lastTransitionTime"] for c in written["conditions"])

        first.stop()
        await first.run_until_stopped()
        # A new gateway with no state dir: the status is all it knows of the rollout.
        second = await cluster_gateway("replica-b")

        async def shown() -> dict[str, Any]:
            answer = await http.get(admin(second))
            return dict(answer.json()) if answer.status_code == 200 else {}

        async def resumed() -> bool:
            return (await shown()).get("phase") == "Paused"

        await eventually(resumed, what="the rollout resumed Paused")
        assert (await shown())["step"] == step  # not 0: it resumed where the status says
        assert (await http.post(f"{admin(second)}/resume")).status_code == 200
        await eventually(
            lambda: status(kube_api).get("currentStep", 0) > step,
            what="the next step written by the new gateway",
        )
    assert status(kube_api)["phase"] in ("Progressing", "Succeeded")


async def test_a_replica_that_does_not_lead_follows_the_written_status(
    kube_api: KubeApiServer,
    kubeconfig: str,
    prometheus: FakePrometheus,  # noqa: F811
) -> None:
    # Two gateway processes: each runs its own rollout controller (the plugin's state is
    # per process, as in two pods).
    apply_rollout(kube_api, prometheus)
    args = ("--kubeconfig", kubeconfig, "--lease-namespace", "default")
    replicas = [GatewayCommand([], *args), GatewayCommand([], *args)]
    try:
        await asyncio.gather(*(asyncio.to_thread(r.wait_ready) for r in replicas))

        def holder() -> str:
            lease = kube_api.get("coordination.k8s.io", "leases", "default", LEASE) or {}
            return str((lease.get("spec") or {}).get("holderIdentity") or "")

        await eventually(holder, timeout=10, what="a leader")
        leader, follower = sorted(replicas, key=lambda r: not holder().endswith(f"-{r.proc.pid}"))
        await eventually(
            lambda: status(kube_api).get("currentStep", 0) >= 2, timeout=10, what="step 2"
        )
        one = "/plugins/rollouts/llama-canary"
        async with httpx.AsyncClient(timeout=2) as http:

            async def known() -> bool:
                return (await http.get(f"{follower.admin}{one}")).status_code == 200

            await eventually(known, what="the follower's controller to know the rollout")
            refused = await http.post(f"{follower.admin}{one}/pause")
            assert refused.status_code == 409, refused.text
            assert "leader" in refused.json()["error"]
            paused = await http.post(f"{leader.admin}{one}/pause")
            assert paused.status_code == 200, paused.text
            step = paused.json()["step"]

            async def follows() -> bool:
                shown = (await http.get(f"{follower.admin}{one}")).json()
                return (shown["phase"], shown["step"]) == ("Paused", step)

            await eventually(follows, what="the follower at the leader's step, paused")
            shown = (await http.get(f"{follower.admin}{one}")).json()
            assert shown["weight"] == status(kube_api)["canaryWeight"] == step
    finally:
        for replica in replicas:
            assert await asyncio.to_thread(replica.stop) == 0, replica.output()
