"""The rollouts' registrations: kind and its run-time status, report, admin API and page,
metrics, worker calls, hooks, command.

Serving processes keep a :class:`Recorder` (observing the rewrite state's version samples,
applying pushed weights and mirror plans, a route rule's weights through the gateway's
``route_weights``); the admin process runs the
:class:`RolloutController`. The rewrite state is the process state ``inference.rewrites``
(:class:`~inference_ext.rewrite.RewriteState`), the object the pools' rewrites read.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from gateway.plugins import AdminContext, PluginApi
from gateway.route_weights import RouteWeights
from inference_ext.api import AMBIENT_GROUP
from inference_ext.rewrite import RewriteState
from inference_ext.rollout.admin import RolloutAdmin, RolloutMetrics
from inference_ext.rollout.api import InferenceRollout
from inference_ext.rollout.controller import DRAIN, PLAN, REPORT, SCORE, RolloutController
from inference_ext.rollout.recorder import Drained, Recorder, ServingPlan
from inference_ext.rollout.report import rollout_report
from inference_ext.rollout.status import InferenceRolloutStatus
from inference_ext.rollout.ui import ui_endpoint


class _Serving:
    """This serving process's side: the recorder, hooked to the rewrite state once."""

    def __init__(self, rewrites: RewriteState, routes: RouteWeights) -> None:
        self.rewrites = rewrites
        self.routes = routes
        self.recorder = Recorder()

    def observe(self) -> None:
        """Start observing the rewrite state's samples (once)."""
        if self.recorder.observe not in self.rewrites.observers:
            self.rewrites.observers.append(self.recorder.observe)
            self.rewrites.feedback_observers.append(self.recorder.feedback)
            self.routes.observers.append(self.recorder.observe_route)

    def drain(self, _: object) -> Drained:
        """The measurements since the last drain, agreement counts included."""
        return self.recorder.drain(self.rewrites.mirror.counters.view())

    def apply(self, plan: ServingPlan) -> int:
        """Apply a pushed plan; answers how many rules are overridden."""
        self.recorder.apply(plan, self.rewrites, self.routes)
        return len(plan.weights) + len(plan.routes)

    def score(self, arg: tuple[str, str, float]) -> bool:
        """Count a score for an answer this process served."""
        return self.recorder.score(*arg)

    def applied(self) -> dict[str, Any]:
        """The weights and mirrors this process applies (its admin view)."""
        plan = self.recorder.applied
        rules = [
            {
                "rewrite": rewrite,
                "model": model,
                "weights": split,
                "mirror": plan.mirrors[(rewrite, model)].fraction
                if (rewrite, model) in plan.mirrors
                else None,
            }
            for (rewrite, model), split in sorted(plan.weights.items())
        ]
        routes = [
            {"route": route, "rule": rule, "weights": split}
            for (route, rule), split in sorted(plan.routes.items())
        ]
        return {"pid": os.getpid(), "rules": rules, "routes": routes}


def _command_configure(parser: argparse.ArgumentParser) -> None:
    from inference_ext.rollout.cli import configure

    configure(parser)


def _command_run(args: argparse.Namespace) -> int:
    from inference_ext.rollout.cli import run

    return run(args)


def register_rollouts(api: PluginApi) -> None:
    """Everything InferenceRollout adds to the gateway."""
    rewrites = api.state("inference.rewrites", RewriteState)
    routes = api.route_weights()
    serving = api.state("inference.rollouts.serving", lambda: _Serving(rewrites, routes))
    admin = api.state("inference.rollouts.admin", RolloutAdmin)

    api.resource_kind(AMBIENT_GROUP, "InferenceRollout", ["v1alpha1"], InferenceRollout)
    api.status_kind(AMBIENT_GROUP, "InferenceRollout", InferenceRolloutStatus)
    api.report(REPORT, rollout_report)
    api.metrics("rollouts", RolloutMetrics(admin))
    api.worker_call(DRAIN, serving.drain)
    api.worker_call(PLAN, serving.apply, sticky=True)
    api.worker_call(SCORE, serving.score)
    api.admin_route("/rollouts", admin.list)
    api.admin_route("/rollouts/{rollout:path}/{action}", admin.action, methods=["POST"])
    api.admin_route("/rollouts/{rollout:path}", admin.one)
    api.admin_route("/feedback", admin.feedback, methods=["POST"])
    api.admin_view("/rollout-weights", serving.applied, lambda views: {"workers": views})
    api.ui_page("rollouts", ui_endpoint(admin.status))

    async def serve() -> None:
        serving.observe()

    async def admin_start(context: AdminContext) -> None:
        admin.controller = RolloutController(context)
        await admin.controller.start()

    async def admin_stop() -> None:
        if admin.controller is not None:
            await admin.controller.stop()
            admin.controller = None

    api.on_start(serve)
    api.on_admin_start(admin_start)
    api.on_admin_stop(admin_stop)
    api.command(
        "rollout",
        "show or steer a canary InferenceRollout through the admin API",
        _command_configure,
        _command_run,
    )
