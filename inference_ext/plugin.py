"""The inference extension's registrations with the gateway (``ambient.plugins`` entry point).

Resource kinds (validated at load): ``v1`` Pod, InferencePool (``inference.networking.k8s.io/v1``
and ``inference.networking.x-k8s.io/v1alpha2``), InferenceObjective, InferenceModelRewrite, and
our EndpointPicker and BodyBasedRouting. The InferencePool backend kind (both groups), the
BodyBasedRouting pre-route stage, the pools' and rewrites' status report, the ``inference_*`` and
``gen_ai_*`` metrics, the admin views ``/plugins/inference`` and ``/plugins/agreement`` (the
answer-agreement counts of canary copies), and the commands ``ambient sim`` and ``ambient epp``.
The pools' schedulers are process state: they keep their scraped signals and prefix index across
reloads, and scrape only while the process serves (started by ``on_start``, stopped by
``on_stop``). So is ``inference.rewrites`` (a :class:`~inference_ext.rewrite.RewriteState`): the
weight overrides and mirror plans a rollout controller sets, the observers of each rewritten
request's version sample, and the canary copies in flight.
"""

from __future__ import annotations

import argparse

from gateway.plugins import PluginApi
from inference_ext.api import (
    AMBIENT_GROUP,
    POOL_GROUP,
    X_GROUP,
    BodyBasedRouting,
    EndpointPicker,
    InferenceModelRewrite,
    InferenceObjective,
    InferencePool,
    InferencePoolAlpha,
    Pod,
)
from inference_ext.bbr import body_based_routing
from inference_ext.pool import Pools, make_factory, merge_pool_views
from inference_ext.rewrite import RewriteState
from inference_ext.rollout.agreement import merge_views as merge_agreement_views
from inference_ext.status import pool_report


def _sim_configure(parser: argparse.ArgumentParser) -> None:
    from inference_ext.sim.cli import configure

    configure(parser)


def _sim_run(args: argparse.Namespace) -> int:
    from inference_ext.sim.cli import run

    return run(args)


def _epp_configure(parser: argparse.ArgumentParser) -> None:
    from inference_ext.extproc.cli import configure

    configure(parser)


def _epp_run(args: argparse.Namespace) -> int:
    from inference_ext.extproc.cli import run

    return run(args)


def register(api: PluginApi) -> None:
    """Everything the inference extension adds to the gateway."""
    pools = api.state("inference.pools", lambda: Pools(api.genai()))
    rewrites = api.state("inference.rewrites", RewriteState)

    api.resource_kind("", "Pod", ["v1"], Pod)
    api.resource_kind(POOL_GROUP, "InferencePool", ["v1"], InferencePool)
    api.resource_kind(X_GROUP, "InferencePool", ["v1alpha2"], InferencePoolAlpha)
    api.resource_kind(X_GROUP, "InferenceObjective", ["v1alpha2"], InferenceObjective)
    api.resource_kind(X_GROUP, "InferenceModelRewrite", ["v1alpha2"], InferenceModelRewrite)
    api.resource_kind(AMBIENT_GROUP, "EndpointPicker", ["v1alpha1"], EndpointPicker)
    api.resource_kind(AMBIENT_GROUP, "BodyBasedRouting", ["v1alpha1"], BodyBasedRouting)
    api.backend_kind(POOL_GROUP, "InferencePool", make_factory(pools, rewrites, POOL_GROUP))
    api.backend_kind(X_GROUP, "InferencePool", make_factory(pools, rewrites, X_GROUP))
    api.stage_kind(AMBIENT_GROUP, "BodyBasedRouting", body_based_routing)
    api.report("inference", pool_report)
    api.metrics("inference", pools.metrics)

    async def start() -> None:
        pools.start()

    async def stop() -> None:
        await pools.stop()
        await rewrites.mirror.close()

    api.admin_view("/inference", pools.describe, merge_pool_views)
    api.admin_view("/agreement", rewrites.mirror.counters.view, merge_agreement_views)
    api.on_start(start)
    api.on_stop(stop)
    api.command("sim", "run vLLM-compatible model-server simulators", _sim_configure, _sim_run)
    api.command(
        "epp",
        "serve an InferencePool's endpoint picker over Envoy ext_proc",
        _epp_configure,
        _epp_run,
    )
    from inference_ext.rollout.plugin import register_rollouts  # canary InferenceRollouts

    register_rollouts(api)
