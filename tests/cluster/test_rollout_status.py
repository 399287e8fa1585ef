"""InferenceRollout status in cluster mode: the leader writes the rollout's phase, step, weights
and last analysis to the object, and a gateway started afresh (no --state-dir) resumes at the
step the status records. The API server is tests/fixtures/kube_api.py's double, standing in
for kube-apiserver (which cannot run here); the analysis queries a Prometheus stand-in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import yaml

from gateway.server import GatewayProcess
from inference_ext.pool import Pools
from tests.cluster.conftest import ClusterGateway
from tests.fixtures.cluster_objects import eventually
from tests.fixtures.inference import pools  # noqa: F401  (fixture: the inference plugin loaded)
from tests.fixtures.kube_api import KubeApiServer
from tests.fixtures.prometheus import FakePrometheus, prometheus, vector  # noqa: F401  (fixture)
from tests.fixtures.rollout import rewrite_doc, rollout_doc

CRDS = Path(__file__).resolve().parents[2] / "deploy" / "crds"
GROUP = "inference.ambient.dev"


def status(api: KubeApiServer) -> dict[str, Any]:
    obj = api.get(GROUP, "inferencerollouts", "default", "llama-canary") or {}
    return dict(obj.get("status") or {})


def admin(process: GatewayProcess) -> str:
    assert process.options.admin is not None
    host, port = process.options.admin
    return f"http://{host}:{port}/plugins/rollouts/llama-canary"


async def test_the_rollout_status_shows_its_step_and_a_fresh_gateway_resumes_there(
    pools: Pools,  # noqa: F811
    kube_api: KubeApiServer,
    cluster_gateway: ClusterGateway,
    prometheus: FakePrometheus,  # noqa: F811
) -> None:
    for name in (f"{GROUP}.yaml", "inference.networking.x-k8s.io.yaml"):
        for crd in yaml.safe_load_all((CRDS / name).read_text()):
            if crd is not None:
                kube_api.apply(crd)  # the generated CRDs, status subresource and all
    prometheus.steady = (200, vector("0"))  # the canary's error rate: every check passes
    query = f"{{address: '{prometheus.address}', query: q}}"
    check = f"{{name: errors, max: 0.02, prometheus: {query}}}"
    kube_api.apply(yaml.safe_load(rewrite_doc()))
    kube_api.apply(yaml.safe_load(rollout_doc(metrics=[check], interval="50ms", minRequests=0)))

    first = await cluster_gateway("replica-a")
    await eventually(lambda: status(kube_api).get("currentStep", 0) >= 3, what="step 3 written")
    async with httpx.AsyncClient(timeout=2) as http:
        response = await http.post(f"{admin(first)}/pause")
        assert response.status_code == 200, response.text
        step = response.json()["step"]
        await eventually(lambda: status(kube_api).get("phase") == "Paused", what="Paused written")
        written = status(kube_api)
        assert written["currentStep"] == step >= 3
        assert written["canaryWeight"] == 10 * step
        assert written["weights"] == [
            {"name": "llama-v1", "weight": 100 - 10 * step},
            {"name": "llama-v2", "weight": 10 * step},
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
