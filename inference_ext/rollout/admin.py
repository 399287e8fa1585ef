"""The rollouts' admin API and metrics, served by the admin process.

- ``GET /plugins/rollouts``: every rollout (phase, step, weight, history of checks);
  ``GET /plugins/rollouts/NAME`` (or ``NAMESPACE/NAME``): one.
- ``POST /plugins/rollouts/NAME/{pause,resume,promote,abort}``.
- ``POST /plugins/feedback`` ``{"requestId", "score" in [0, 1]}``: an application's score for an
  answer (``feedback-score``), counted for the version that gave it. The request id may come in
  ``x-request-id`` instead.
- ``GET /ui/rollouts``: the rollouts page (:mod:`.ui`) over the same status.
- ``ambient_rollout_weight{rollout,version}``, ``ambient_rollout_phase{rollout,phase}``,
  ``ambient_rollout_step{rollout}``, ``ambient_rollout_check_failures_total{rollout,metric}``:
  from the controller, so once however many workers serve.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from starlette.requests import Request
from starlette.responses import Response

from inference_ext.rollout.analysis import Phase
from inference_ext.rollout.controller import RolloutController, RolloutError


class _Json(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_INDENT_2)


def _error(message: str, status: int) -> Response:
    return _Json({"error": message}, status_code=status)


class RolloutAdmin:
    """The endpoints over the admin process's controller (None until it starts)."""

    def __init__(self) -> None:
        self.controller: RolloutController | None = None

    def _running(self) -> RolloutController:
        if self.controller is None:
            raise RolloutError("the rollout controller is not running in this process", 503)
        return self.controller

    def status(self) -> dict[str, Any]:
        """Every rollout's status (none before the controller starts)."""
        return {"rollouts": []} if self.controller is None else self.controller.status()

    async def list(self, request: Request) -> Response:
        """``GET /plugins/rollouts``."""
        return _Json(self.status())

    async def one(self, request: Request) -> Response:
        """``GET /plugins/rollouts/NAME``."""
        try:
            controller = self._running()
            return _Json(controller.describe(controller.find(request.path_params["rollout"])))
        except RolloutError as exc:
            return _error(str(exc), exc.status)

    async def action(self, request: Request) -> Response:
        """``POST /plugins/rollouts/NAME/ACTION``."""
        try:
            controller = self._running()
            run = await controller.act(
                request.path_params["rollout"], request.path_params["action"]
            )
            return _Json(controller.describe(run))
        except RolloutError as exc:
            return _error(str(exc), exc.status)

    async def feedback(self, request: Request) -> Response:
        """``POST /plugins/feedback``."""
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError as exc:
            return _error(f"body: not JSON ({exc})", 400)
        if not isinstance(body, dict):
            return _error("body: expected a JSON object {requestId, score}", 400)
        request_id = body.get("requestId") or request.headers.get("x-request-id")
        if not isinstance(request_id, str) or not request_id:
            return _error("requestId: required (or an x-request-id header)", 400)
        score = body.get("score")
        if isinstance(score, bool) or not isinstance(score, int | float):
            return _error(f"score: expected a number in [0, 1], got {score!r}", 400)
        if not (math.isfinite(score) and 0 <= score <= 1):
            return _error(f"score: {score!r} is outside [0, 1]", 400)
        try:
            counted = await self._running().score(request_id, "feedback-score", float(score))
        except RolloutError as exc:
            return _error(str(exc), exc.status)
        if not counted:
            return _error(f"requestId {request_id!r}: no rewritten answer with this id", 404)
        return _Json({"requestId": request_id, "metric": "feedback-score", "score": score})


class RolloutMetrics:
    """The rollouts' metric families, rendered from the admin process's controller."""

    def __init__(self, admin: RolloutAdmin) -> None:
        self.admin = admin

    def export_state(self) -> Any:
        """Nothing per serving process: the controller's state is the admin process's."""
        return None

    def collect(self, states: list[Any]) -> Iterable[Metric]:
        """Weights, phases, steps and failed checks of every rollout."""
        controller = self.admin.controller
        if controller is None:
            return
        weight = GaugeMetricFamily(
            "ambient_rollout_weight",
            "Percent of traffic per version",
            labels=["rollout", "version"],
        )
        phase = GaugeMetricFamily(
            "ambient_rollout_phase", "1 for the rollout's phase", labels=["rollout", "phase"]
        )
        step = GaugeMetricFamily("ambient_rollout_step", "Current step", labels=["rollout"])
        failed = CounterMetricFamily(
            "ambient_rollout_check_failures",
            "Failed checks",
            labels=["rollout", "metric"],
        )
        for key, run in sorted(controller.runs.items()):
            weight.add_metric([key, run.spec.stable], 100 - run.state.weight)
            weight.add_metric([key, run.spec.canary], run.state.weight)
            for value in Phase:
                phase.add_metric([key, str(value)], 1.0 if run.phase is value else 0.0)
            step.add_metric([key], run.state.step)
        for (key, metric), count in sorted(controller.failed_checks.items()):
            failed.add_metric([key, metric], count)
        yield from (weight, phase, step, failed)
