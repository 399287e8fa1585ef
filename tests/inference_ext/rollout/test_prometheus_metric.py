"""A ``prometheus:`` metric, queried over loopback HTTP from a tiny aiohttp server that answers
``GET /api/v1/query`` with Prometheus' JSON (tests/fixtures/prometheus.py): a stand-in for a
Prometheus server, not one. The controller is driven tick by tick (its clock moved by the
test)."""

from __future__ import annotations

from typing import Any

import pytest

from inference_ext.rollout.analysis import Phase
from inference_ext.rollout.controller import RolloutController
from tests.fixtures.prometheus import FakePrometheus, prometheus, vector  # noqa: F401  (fixture)
from tests.fixtures.rollout import (
    InProcessAdmin,
    config,
    rollout_doc,
    rollout_plugin,  # noqa: F401  (fixture)
)

pytestmark = pytest.mark.usefixtures("rollout_plugin")
QUERY = 'sum(rate(errors_total{model="llama-v2"}[1m]))'


async def test_prometheus_query_results_are_judged_and_no_data_or_errors_hold(
    prometheus: FakePrometheus,  # noqa: F811
) -> None:
    metric = (
        f"{{name: canary-errors, max: 0.5, "
        f"prometheus: {{address: '{prometheus.address}', query: '{QUERY}'}}}}"
    )
    admin = InProcessAdmin(config(rollout_doc(metrics=[metric], minRequests=0)))
    now = [0.0]
    controller = RolloutController(admin.context, clock=lambda: now[0])
    await controller.load()
    await controller.tick()  # step 1
    run = controller.runs["default/llama-canary"]

    async def judge(status: int, body: dict[str, Any]) -> dict[str, Any]:
        prometheus.answers.append((status, body))
        now[0] += 0.2
        await controller.tick()
        return dict(run.history[-1]["checks"][0])

    check = await judge(200, vector("0.25"))
    assert (check["value"], check["verdict"], check["limit"]) == (0.25, "pass", "<= 0.5")
    assert run.state.weight == 20 and prometheus.queries == [QUERY]

    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    assert (await judge(200, empty))["verdict"] == "inconclusive"
    broken = await judge(503, {"status": "error", "error": "overloaded"})
    assert broken["verdict"] == "inconclusive"
    assert broken["reason"] == f"{prometheus.address}/api/v1/query: 503 overloaded"
    assert run.state.weight == 20 and run.state.failures == 0

    high = await judge(200, vector("0.9"))
    assert (high["value"], high["verdict"]) == (0.9, "fail")
    scalar = {"status": "success", "data": {"resultType": "scalar", "result": [1.0, "0.7"]}}
    assert (await judge(200, scalar))["verdict"] == "fail"
    assert (run.state.phase, run.state.weight) == (Phase.FAILED, 0)
    await controller.stop()
