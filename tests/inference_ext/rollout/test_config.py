"""InferenceRollout at load and compile: bad specs are errors naming the field, a missing or
mismatched target is a ResolvedRefs=False status; and the per-version histograms merge exactly."""

from __future__ import annotations

import random

import pytest

from gateway.compile import compile_snapshot
from gateway.config import ConfigError, load_text
from gateway.snapshot import Snapshot
from inference_ext.rollout.api import RolloutSpec
from inference_ext.rollout.sketch import Aggregate, quantile
from tests.fixtures.rollout import (
    config,
    rewrite_doc,
    rollout_doc,
    rollout_plugin,  # noqa: F401  (fixture)
    route_rollout_doc,
    versions_route_doc,
)


def compile_text(text: str) -> Snapshot:
    return compile_snapshot(load_text(text, "rollout.yaml"), 1)


@pytest.mark.usefixtures("rollout_plugin")
@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            rollout_doc(metrics=["{name: ttft-p900, max: 1}"]),
            "spec.analysis.metrics[0]: name: unknown metric 'ttft-p900'",
        ),
        (
            rollout_doc(metrics=["{name: qps, max: 1}"]),
            "or give prometheus: {address, query}",
        ),
        (
            rollout_doc(stepWeights="[5, 10]"),
            "spec.analysis: give exactly one of stepWeight and stepWeights",
        ),
        (
            rollout_doc(stepWeight=None),
            "spec.analysis: give exactly one of stepWeight and stepWeights",
        ),
        (rollout_doc(maxWeight=150), "spec.analysis.maxWeight"),
        (rollout_doc(canary="llama-v1"), "canary: must differ from stable (both 'llama-v1')"),
        (
            rollout_doc(stepWeight=None, stepWeights="[10, 5]"),
            "stepWeights: [10, 5] must be increasing percentages in 1..100",
        ),
        (rollout_doc(metrics=["{name: error-rate}"]), "needs a limit"),
        (
            rollout_doc(
                metrics=[
                    "{name: q, maxRatio: 2, prometheus: {address: 'http://127.0.0.1:1', query: up}}"
                ]
            ),
            "a prometheus query has no stable/canary ratio",
        ),
        (rollout_doc(interval="0s"), "spec.analysis.interval"),
        (
            rollout_doc(metrics=["{name: agreement, minRatio: 0.9}"]),
            "metric 'agreement': is the canary's agreement with stable; use max or min",
        ),
        (
            rollout_doc(metrics=["{name: ttft-p90, maxRatio: 1.2, mirror: 0.5}"]),
            "metric 'ttft-p90': mirror and similarity are agreement's",
        ),
    ],
)
def test_bad_specs_are_load_errors_naming_the_field(doc: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_text(config(doc))
    assert "InferenceRollout default/llama-canary" in str(info.value)
    assert expected in str(info.value)


@pytest.mark.usefixtures("rollout_plugin")
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (config(rollout_doc(target="nope")), "InferenceModelRewrite default/nope not found"),
        (
            config(rollout_doc(canary="llama-v3")),
            "InferenceModelRewrite default/llama-versions: the rule for model 'llama' "
            "has no target 'llama-v3'",
        ),
        (
            config().replace(rewrite_doc(), rewrite_doc(model="mistral")),
            "InferenceModelRewrite default/llama-versions has no rule matching model 'llama'",
        ),
    ],
)
def test_an_unresolved_target_is_a_resolved_refs_false_condition(text: str, message: str) -> None:
    snapshot = compile_text(text)
    (status,) = [s for s in snapshot.statuses if s.kind == "InferenceRollout"]
    assert not status.valid
    (parent,) = status.parents
    assert parent.parent.startswith("InferenceModelRewrite default/")
    resolved = next(c for c in parent.conditions if c.type == "ResolvedRefs")
    assert (resolved.status, resolved.reason) == ("False", "InvalidTarget")
    assert resolved.message == f"targetRef: {message}"
    assert snapshot.dump["rollouts"]["problems"] == {"default/llama-canary": resolved.message}


@pytest.mark.usefixtures("rollout_plugin")
def test_a_valid_rollout_compiles_its_steps_and_checks() -> None:
    snapshot = compile_text(config())
    (spec,) = snapshot.dump["rollouts"]["specs"]
    assert isinstance(spec, RolloutSpec)
    assert spec.steps == (10, 20, 30, 40, 50) and spec.interval == pytest.approx(0.2)
    assert [c.name for c in spec.checks] == ["ttft-p90", "error-rate"]
    listed = compile_text(config(rollout_doc(stepWeight=None, stepWeights="[5, 10, 25, 50]")))
    assert listed.dump["rollouts"]["specs"][0].steps == (5, 10, 25, 50)
    status = next(s for s in snapshot.statuses if s.kind == "InferenceRollout")
    assert status.valid


def test_histograms_from_several_workers_merge_to_the_percentile_of_all_samples() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(-2, 0.8) for _ in range(3000)]
    workers = [Aggregate() for _ in range(3)]
    whole = Aggregate()
    for i, value in enumerate(values):
        workers[i % 3].observe(200, value, None, value)
        whole.observe(200, value, None, value)
    merged = Aggregate()
    for worker in workers:
        merged.merge(Aggregate.from_state(worker.to_state()))
    assert merged.histograms == whole.histograms and merged.requests == 3000
    exact = sorted(values)[int(0.9 * len(values)) - 1]
    p90 = merged.percentile("ttft", 0.9)
    assert p90 is not None and exact <= p90 <= exact * 1.04
    assert quantile({}, 0.9) is None


def route_config(*docs: str) -> str:
    """A Gateway, the HTTPRoute ``llm-route`` (rule ``versions``) and ``docs``."""
    return config(versions_route_doc(), *docs)


@pytest.mark.usefixtures("rollout_plugin")
@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (
            route_rollout_doc().replace(", sectionName: versions", ""),
            "spec.targetRef: sectionName: required for an HTTPRoute: the name of its rule",
        ),
        (
            route_rollout_doc().replace("group: gateway.networking.k8s.io", "group: example.com"),
            "spec.targetRef: group: HTTPRoute is in group 'gateway.networking.k8s.io', "
            "got 'example.com'",
        ),
        (
            rollout_doc(target_ref="{kind: InferenceModelRewrite, name: x, sectionName: y}"),
            "spec.targetRef: sectionName: only for an HTTPRoute target",
        ),
        (rollout_doc(model=None), "model: required for an InferenceModelRewrite target"),
        (
            route_rollout_doc(metrics=["{name: agreement, min: 0.9}"]),
            "analysis.metrics: agreement mirrors through an InferenceModelRewrite",
        ),
        (rollout_doc(target_ref="{kind: Service, name: x}"), "spec.targetRef.kind"),
    ],
)
def test_bad_route_targets_are_load_errors_naming_the_field(doc: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        compile_text(route_config(doc))
    assert "InferenceRollout default/llama-canary" in str(info.value)
    assert expected in str(info.value)


@pytest.mark.usefixtures("rollout_plugin")
@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (route_rollout_doc(route="nope"), "HTTPRoute default/nope not found"),
        (
            route_rollout_doc(rule="canary"),
            "HTTPRoute default/llm-route has no rule named 'canary'",
        ),
        (
            route_rollout_doc(canary="llama-v3-pool"),
            "HTTPRoute default/llm-route rule 'versions' has no backendRef named 'llama-v3-pool'",
        ),
        (
            route_rollout_doc(stable="a", canary="b"),
            "HTTPRoute default/llm-route rule 'versions' has no backendRef named 'a', 'b'",
        ),
    ],
)
def test_an_unresolved_route_target_is_a_resolved_refs_false_condition(
    doc: str, message: str
) -> None:
    snapshot = compile_text(route_config(doc))
    (status,) = [s for s in snapshot.statuses if s.kind == "InferenceRollout"]
    (parent,) = status.parents
    assert not status.valid and parent.parent.startswith("HTTPRoute default/")
    resolved = next(c for c in parent.conditions if c.type == "ResolvedRefs")
    assert (resolved.status, resolved.reason) == ("False", "InvalidTarget")
    assert resolved.message == f"targetRef: {message}"
    assert snapshot.dump["rollouts"]["problems"] == {"default/llama-canary": resolved.message}


@pytest.mark.usefixtures("rollout_plugin")
def test_a_route_rollout_compiles_to_the_rule_and_its_backend_refs() -> None:
    snapshot = compile_text(route_config(route_rollout_doc()))
    (spec,) = snapshot.dump["rollouts"]["specs"]
    assert (spec.route, spec.rule, spec.rewrite, spec.model) == (
        "default/llm-route", "versions", "HTTPRoute default/llm-route/versions", "",
    )  # fmt: skip
    assert (spec.stable, spec.canary) == ("llama-v1-pool", "llama-v2-pool")
    status = next(s for s in snapshot.statuses if s.kind == "InferenceRollout")
    assert status.valid and status.parents[0].parent == "HTTPRoute default/llm-route"
