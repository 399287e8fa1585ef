"""The rollouts' registrations: kind, report, admin API, metrics, worker calls, hooks, command.

Serving processes keep a :class:`Recorder` (observing the rewrite state's samples, applying
pushed weights); the admin process runs the :class:`RolloutController`. The rewrite state is
found at run time as the process state ``inference.rewrites`` (see ``contract``), so whichever
plugin makes it, this one drives it.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any, cast

from gateway.plugins import AdminContext, PluginApi, process_state
from inference_ext.api import AMBIENT_GROUP
from inference_ext.rollout.admin import RolloutAdmin, RolloutMetrics
from inference_ext.rollout.api import InferenceRollout
from inference_ext.rollout.contract import REWRITES_STATE, Rewrites
from inference_ext.rollout.controller import (
    DRAIN,
    REPORT,
    SCORE,
    WEIGHTS,
    RolloutController,
)
from inference_ext.rollout.recorder import Recorder, Weights
from inference_ext.rollout.report import rollout_report

log = logging.getLogger("inference_ext.rollout")


def _rewrites() -> Rewrites | None:
    """The serving process's rewrite state, if a plugin made one."""
    return cast("Rewrites | None", process_state(REWRITES_STATE))


class _Serving:
    """This serving process's side: the recorder, hooked to the rewrite state once."""

    def __init__(self) -> None:
        self.recorder = Recorder()
        self.observing = False

    def observe(self) -> None:
        """Start observing the rewrite state's samples (once)."""
        rewrites = _rewrites()
        if rewrites is None:
            log.warning("rollouts: no %s state in this process: nothing to measure", REWRITES_STATE)
        elif not self.observing:
            rewrites.observers.append(self.recorder.observe)
            self.observing = True

    def weights(self, weights: Weights) -> int:
        """Apply pushed weights; answers how many rules are overridden."""
        self.recorder.apply(weights, _rewrites())
        return len(weights)

    def score(self, arg: tuple[str, str, float]) -> bool:
        """Count a score for an answer this process served."""
        return self.recorder.score(*arg)

    def applied(self) -> dict[str, Any]:
        """The weights this process applies (its admin view)."""
        rules = [
            {"rewrite": rewrite, "model": model, "weights": split}
            for (rewrite, model), split in sorted(self.recorder.applied.items())
        ]
        return {"pid": os.getpid(), "rules": rules}


def _command_configure(parser: argparse.ArgumentParser) -> None:
    from inference_ext.rollout.cli import configure

    configure(parser)


def _command_run(args: argparse.Namespace) -> int:
    from inference_ext.rollout.cli import run

    return run(args)


def register_rollouts(api: PluginApi) -> None:
    """Everything InferenceRollout adds to the gateway."""
    serving = api.state("inference.rollouts.serving", _Serving)
    admin = api.state("inference.rollouts.admin", RolloutAdmin)

    api.resource_kind(AMBIENT_GROUP, "InferenceRollout", ["v1alpha1"], InferenceRollout)
    api.report(REPORT, rollout_report)
    api.metrics("rollouts", RolloutMetrics(admin))
    api.worker_call(DRAIN, lambda _: serving.recorder.drain())
    api.worker_call(WEIGHTS, serving.weights, sticky=True)
    api.worker_call(SCORE, serving.score)
    api.admin_route("/rollouts", admin.list)
    api.admin_route("/rollouts/{rollout:path}/{action}", admin.action, methods=["POST"])
    api.admin_route("/rollouts/{rollout:path}", admin.one)
    api.admin_route("/feedback", admin.feedback, methods=["POST"])
    api.admin_view("/rollout-weights", serving.applied, lambda views: {"workers": views})

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
