"""The analysis loop driven tick by tick with synthetic samples spread over two in-process
"workers" (recorders) and a clock the test moves: steps, holds, rollback, promotion, spec changes,
pause/resume/promote/abort, feedback scores and state files. No sockets: the controller's
worker calls are answered in process (the real pipe is tested in test_rollout_process)."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from gateway.live_status import ObjectRef
from gateway.route_weights import RouteAnswer
from inference_ext.rewrite.mirror import MirrorPlan
from inference_ext.rollout.agreement import Comparison
from inference_ext.rollout.analysis import Phase
from inference_ext.rollout.controller import RolloutController, RolloutError
from tests.fixtures.rollout import (
    REWRITE,
    InProcessAdmin,
    config,
    rewrite_doc,
    rollout_doc,
    rollout_plugin,  # noqa: F401  (fixture)
    route_rollout_doc,
    samples,
    versions_route_doc,
)

pytestmark = pytest.mark.usefixtures("rollout_plugin")
KEY = (REWRITE, "llama")


class Clock:
    """Monotonic time the test advances."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def started(admin: InProcessAdmin, clock: Clock) -> RolloutController:
    """A controller that has loaded the config and taken its first step (10%)."""
    controller = RolloutController(admin.context, clock=clock)
    await controller.load()
    await controller.tick()
    assert controller.runs["default/llama-canary"].state.step == 1
    return controller


async def interval(
    admin: InProcessAdmin,
    controller: RolloutController,
    clock: Clock,
    stable_ttft: float = 0.1,
    canary_ttft: float = 0.1,
    canary_status: int = 200,
    count: int = 20,
) -> None:
    """One interval's traffic on both versions, then the tick that judges it."""
    admin.feed(samples("llama-v1", count, stable_ttft))
    admin.feed(samples("llama-v2", count, canary_ttft, canary_status))
    clock.now += 0.2
    await controller.tick()


def run_of(controller: RolloutController):  # type: ignore[no-untyped-def]
    return controller.runs["default/llama-canary"]


async def test_passing_intervals_step_up_to_max_weight_then_promote_to_100() -> None:
    admin, clock = InProcessAdmin(config()), Clock()
    controller = await started(admin, clock)
    assert admin.rewrites[0].override(REWRITE, "llama") == {"llama-v1": 90, "llama-v2": 10}
    seen = [run_of(controller).state.weight]
    for _ in range(5):
        await interval(admin, controller, clock)
        seen.append(run_of(controller).state.weight)
    assert seen == [10, 20, 30, 40, 50, 100]
    run = run_of(controller)
    assert run.state.phase is Phase.SUCCEEDED
    # Both "workers" got every step's weights, the last being all traffic on the canary.
    for state in admin.rewrites:
        assert state.override(*KEY) == {"llama-v1": 0, "llama-v2": 100}
    status = controller.status()["rollouts"][0]
    assert (status["phase"], status["weight"], status["step"]) == ("Succeeded", 100, 6)
    judged = [h for h in status["history"] if h["checks"]]
    assert all(c["verdict"] == "pass" for h in judged for c in h["checks"])
    ttft = judged[0]["checks"][0]
    assert ttft["metric"] == "ttft-p90" and ttft["limit"] == "<= 1.2x stable"
    assert ttft["stable"] == pytest.approx(0.1, rel=0.04) and ttft["value"] == pytest.approx(1.0)


async def test_fewer_than_min_requests_is_inconclusive_and_holds_the_step() -> None:
    admin, clock = InProcessAdmin(config()), Clock()
    controller = await started(admin, clock)
    await interval(admin, controller, clock, count=4)  # minRequests is 10 per version
    run = run_of(controller)
    assert (run.state.phase, run.state.step, run.state.weight, run.state.failures) == (
        Phase.PROGRESSING, 1, 10, 0,
    )  # fmt: skip
    last = run.history[-1]["checks"]
    assert {c["verdict"] for c in last} == {"inconclusive"}
    assert "fewer than 10 requests per version (stable 4, canary 4)" in last[0]["reason"]


async def test_slow_canary_fails_threshold_times_and_rolls_back_to_0() -> None:
    admin, clock = InProcessAdmin(config()), Clock()
    controller = await started(admin, clock)
    await interval(admin, controller, clock)  # healthy: 20%
    await interval(admin, controller, clock, canary_ttft=0.14)  # +40% TTFT: failure 1 of 2
    run = run_of(controller)
    assert (run.state.phase, run.state.weight, run.state.failures) == (Phase.PROGRESSING, 20, 1)
    check = run.history[-1]["checks"][0]
    assert check["verdict"] == "fail" and check["value"] == pytest.approx(1.4, rel=0.05)
    await interval(admin, controller, clock, canary_ttft=0.14)
    assert (run.state.phase, run.state.weight, run.state.failures) == (Phase.FAILED, 0, 2)
    assert "rolled back after 2 failed checks (last: ttft-p90)" in run.state.message
    for state in admin.rewrites:
        assert state.override(*KEY) == {"llama-v1": 100, "llama-v2": 0}
    assert controller.failed_checks == {("default/llama-canary", "ttft-p90"): 2}
    await interval(admin, controller, clock)  # a failed rollout stays where it is
    assert (run.state.phase, run.state.weight) == (Phase.FAILED, 0)


async def test_canary_errors_above_max_roll_back() -> None:
    admin, clock = InProcessAdmin(config()), Clock()
    controller = await started(admin, clock)
    for _ in range(2):
        admin.feed(samples("llama-v1", 40))
        admin.feed(samples("llama-v2", 38) + samples("llama-v2", 2, status=503))  # 5% errors
        clock.now += 0.2
        await controller.tick()
    run = run_of(controller)
    assert (run.state.phase, run.state.weight) == (Phase.FAILED, 0)
    errors = run.history[-1]["checks"][1]
    assert errors["metric"] == "error-rate" and errors["canary"] == pytest.approx(0.05)
    assert errors["verdict"] == "fail"


async def test_spec_change_restarts_analysis_but_keeps_the_weight() -> None:
    admin, clock = InProcessAdmin(config()), Clock()
    controller = await started(admin, clock)
    await interval(admin, controller, clock)  # 20%
    await interval(admin, controller, clock, canary_ttft=0.2)  # one failure
    assert (run_of(controller).state.weight, run_of(controller).state.failures) == (20, 1)
    admin.feed(samples("llama-v2", 5))  # half an interval's traffic, then the reload
    admin.reload(config(rollout_doc(threshold=3)))
    clock.now += 0.1
    await controller.tick()
    run = run_of(controller)
    assert (run.state.phase, run.state.step, run.state.weight, run.state.failures) == (
        Phase.PROGRESSING, 2, 20, 0,
    )  # fmt: skip
    assert run.window == {} and "spec changed" in run.state.message
    clock.now += 0.15  # the old interval would have ended: the new one has not
    await controller.tick()
    assert (run.state.step, run.state.failures) == (2, 0)
    await interval(admin, controller, clock)
    assert run.state.weight == 30


async def test_pause_holds_resume_continues_promote_and_abort_jump() -> None:
    admin, clock = InProcessAdmin(config()), Clock()
    controller = await started(admin, clock)
    await controller.act("llama-canary", "pause")
    await interval(admin, controller, clock)
    run = run_of(controller)
    assert (run.state.phase, run.state.weight) == (Phase.PAUSED, 10)
    await controller.act("default/llama-canary", "resume")
    assert run.state.phase is Phase.PROGRESSING
    with pytest.raises(RolloutError, match="is not paused"):
        await controller.act("llama-canary", "resume")
    await interval(admin, controller, clock)
    assert run.state.weight == 20
    await controller.act("llama-canary", "promote")
    assert (run.state.phase, run.state.weight) == (Phase.SUCCEEDED, 100)
    assert admin.rewrites[1].override(*KEY) == {"llama-v1": 0, "llama-v2": 100}
    await controller.act("llama-canary", "abort")
    assert (run.state.phase, run.state.weight) == (Phase.FAILED, 0)
    assert admin.rewrites[0].override(*KEY) == {"llama-v1": 100, "llama-v2": 0}
    with pytest.raises(RolloutError, match="no rollout 'nope'") as info:
        await controller.act("nope", "pause")
    assert info.value.status == 404


async def test_feedback_scores_count_for_the_version_that_answered() -> None:
    text = config(rollout_doc(metrics=["{name: feedback-score, minRatio: 0.95}"], minRequests=2))
    admin, clock = InProcessAdmin(text), Clock()
    controller = await started(admin, clock)
    stable, canary = samples("llama-v1", 4), samples("llama-v2", 4)
    admin.feed(stable + canary)
    for sample in stable:
        assert await controller.score(sample.request_id, "feedback-score", 0.9)
    for sample in canary:
        assert await controller.score(sample.request_id, "feedback-score", 0.5)
    assert not await controller.score("never-served", "feedback-score", 1.0)
    clock.now += 0.2
    await controller.tick()
    check = run_of(controller).history[-1]["checks"][0]
    assert (check["stable"], check["canary"]) == (pytest.approx(0.9), pytest.approx(0.5))
    assert check["verdict"] == "fail" and run_of(controller).state.failures == 1


async def test_state_file_resumes_the_recorded_step_and_a_changed_spec_keeps_its_weight(
    tmp_path: Path,
) -> None:
    admin, clock = InProcessAdmin(config(), state_dir=str(tmp_path)), Clock()
    controller = await started(admin, clock)
    await interval(admin, controller, clock)
    await interval(admin, controller, clock)
    saved = orjson.loads((tmp_path / "rollouts" / "default_llama-canary.json").read_bytes())
    assert (saved["phase"], saved["step"], saved["weight"]) == ("Progressing", 3, 30)

    again = InProcessAdmin(config(), state_dir=str(tmp_path))
    restarted = RolloutController(again.context, clock=clock)
    await restarted.load()
    # Pushed at load, before any tick: serving processes never see 0% or 100% meanwhile.
    assert again.rewrites[0].override(*KEY) == {"llama-v1": 70, "llama-v2": 30}
    await restarted.tick()
    assert (run_of(restarted).state.step, run_of(restarted).state.weight) == (3, 30)

    changed = InProcessAdmin(config(rollout_doc(threshold=5)), state_dir=str(tmp_path))
    third = RolloutController(changed.context, clock=clock)
    await third.load()
    state = run_of(third).state
    assert (state.phase, state.step, state.weight, state.failures) == (Phase.PROGRESSING, 3, 30, 0)


async def test_the_published_status_seeds_a_controller_with_no_state_dir() -> None:
    admin, clock = InProcessAdmin(config()), Clock()
    controller = await started(admin, clock)
    await interval(admin, controller, clock)  # step 2: 20%
    await interval(admin, controller, clock, canary_ttft=0.5)  # a failed check holds step 2
    ref = ObjectRef("inference.ambient.dev", "InferenceRollout", "default", "llama-canary")
    status = admin.context.statuses.published()[ref]
    shown = (status["phase"], status["currentStep"], status["canaryWeight"])
    assert shown == ("Progressing", 2, 20)
    assert (status["failedChecks"], status["lastAnalysis"]["verdict"]) == (1, "fail")
    checked = next(c for c in status["conditions"] if c["type"] == "ChecksPassed")
    assert (checked["status"], checked["reason"]) == ("False", "CheckFailed")
    assert checked["message"].startswith("ttft-p90: canary/stable ")

    def restarted_with(text: str) -> InProcessAdmin:
        again = InProcessAdmin(text)
        again.context.statuses.record_with(lambda r: status if r == ref else None, lambda: None)
        return again

    again = restarted_with(config())
    restarted = RolloutController(again.context, clock=clock)
    await restarted.load()
    state = run_of(restarted).state
    assert (state.phase, state.step, state.weight, state.failures) == (Phase.PROGRESSING, 2, 20, 1)
    assert again.rewrites[0].override(*KEY) == {"llama-v1": 80, "llama-v2": 20}
    # Other versions are another rollout: the status of the old one is not resumed.
    other = restarted_with(config(rollout_doc(stable="llama-v2", canary="llama-v1")))
    fresh = RolloutController(other.context, clock=clock)
    await fresh.load()
    assert run_of(fresh).state.step == 0


async def test_a_missing_target_is_pending_with_the_reason_and_sets_no_weights() -> None:
    text = config(rollout_doc(target="nope"))
    admin, clock = InProcessAdmin(text), Clock()
    controller = RolloutController(admin.context, clock=clock)
    await controller.load()
    await controller.tick()
    (status,) = controller.status()["rollouts"]
    assert status["phase"] == "Pending"
    assert status["message"] == "targetRef: InferenceModelRewrite default/nope not found"
    assert admin.rewrites[0].weights() == {} and admin.recorders[0].applied.weights == {}


async def test_a_rollout_removed_from_the_config_drops_its_override_everywhere() -> None:
    admin, clock = InProcessAdmin(config()), Clock()
    controller = await started(admin, clock)
    assert admin.rewrites[0].override(*KEY) == {"llama-v1": 90, "llama-v2": 10}
    admin.reload(config(rewrite_doc(name="other")))
    clock.now += 0.1
    await controller.tick()
    assert controller.status() == {"rollouts": []}
    for recorder, state in zip(admin.recorders, admin.rewrites, strict=True):
        assert recorder.applied.weights == {} and state.override(*KEY) is None


async def test_agreement_mirrors_while_analysing_and_judges_the_counts_of_every_worker() -> None:
    metric = "{name: agreement, min: 0.9, mirror: 0.25, similarity: 0.8}"
    admin, clock = InProcessAdmin(config(rollout_doc(metrics=[metric], threshold=1))), Clock()
    controller = await started(admin, clock)
    plan = MirrorPlan("default/llama-canary", "llama-v2", 0.25, Comparison("similarity", 0.8))
    assert [state.mirror_plan(*KEY) for state in admin.rewrites] == [plan, plan]

    def compared(agreed: int, disagreed: int) -> None:
        """Comparisons the mirrors of both workers counted (half each)."""
        for state in admin.rewrites:
            for result in [True] * (agreed // 2) + [False] * (disagreed // 2):
                state.mirror.counters.add("default/llama-canary", time.time(), result)

    compared(18, 2)  # 90%
    await interval(admin, controller, clock)
    run = run_of(controller)
    check = run.history[-1]["checks"][0]
    assert (check["stable"], check["canary"], check["verdict"]) == (None, 0.9, "pass")
    assert run.state.weight == 20
    await interval(admin, controller, clock)  # no comparisons in this interval
    assert run.history[-1]["checks"][0]["verdict"] == "inconclusive"
    compared(10, 10)
    await interval(admin, controller, clock)
    check = run.history[-1]["checks"][0]
    assert (check["canary"], check["verdict"]) == (0.5, "fail")
    assert (run.state.phase, run.state.weight) == (Phase.FAILED, 0)
    assert [state.mirror_plan(*KEY) for state in admin.rewrites] == [None, None]


ROUTE_SAMPLES = "HTTPRoute default/llm-route/versions"
RULE = ("default/llm-route", "versions")


async def test_a_route_rule_rollout_drives_the_rules_weights_from_its_backend_refs_samples() -> (
    None
):
    admin, clock = InProcessAdmin(config(versions_route_doc(), route_rollout_doc())), Clock()
    controller = await started(admin, clock)
    assert [r.get(*RULE) for r in admin.routes] == [{"llama-v1-pool": 90, "llama-v2-pool": 10}] * 2
    assert admin.recorders[0].applied.weights == {}  # no rewrite is touched
    for _ in range(2):
        admin.feed(samples("llama-v1-pool", 20, 0.1, rewrite=ROUTE_SAMPLES, incoming=""))
        admin.feed(samples("llama-v2-pool", 20, 0.1, rewrite=ROUTE_SAMPLES, incoming=""))
        clock.now += 0.2
        await controller.tick()
    assert run_of(controller).state.weight == 30
    assert admin.routes[1].get(*RULE) == {"llama-v1-pool": 70, "llama-v2-pool": 30}
    status = controller.status()["rollouts"][0]
    assert (status["route"], status["rule"]) == RULE
    # A slow canary backendRef fails twice: back to 0% on the rule, in every worker.
    for _ in range(2):
        admin.feed(samples("llama-v1-pool", 20, 0.1, rewrite=ROUTE_SAMPLES, incoming=""))
        admin.feed(samples("llama-v2-pool", 20, 0.15, rewrite=ROUTE_SAMPLES, incoming=""))
        clock.now += 0.2
        await controller.tick()
    assert (run_of(controller).state.phase, run_of(controller).state.weight) == (Phase.FAILED, 0)
    assert [r.get(*RULE) for r in admin.routes] == [{"llama-v1-pool": 100, "llama-v2-pool": 0}] * 2
    # Removed from the config: the override goes too (the rule's own weights apply again).
    admin.reload(config(versions_route_doc()))
    clock.now += 0.1
    await controller.tick()
    assert [r.overrides() for r in admin.routes] == [{}, {}]


async def test_a_route_rollout_whose_rule_is_missing_is_pending_and_sets_no_weights() -> None:
    admin = InProcessAdmin(config(versions_route_doc(rule="other"), route_rollout_doc()))
    controller = RolloutController(admin.context, clock=Clock())
    await controller.load()
    await controller.tick()
    (status,) = controller.status()["rollouts"]
    assert status["phase"] == "Pending"
    assert (
        status["message"] == "targetRef: HTTPRoute default/llm-route has no rule named 'versions'"
    )
    assert [r.overrides() for r in admin.routes] == [{}, {}]


async def test_a_service_backend_refs_answers_measured_by_the_gateway_drive_the_rollout() -> None:
    admin, clock = InProcessAdmin(config(versions_route_doc(), route_rollout_doc())), Clock()
    controller = await started(admin, clock)
    for i in range(40):  # the gateway's RouteAnswers of two Services, spread over the workers
        for version, first_byte in (("llama-v1-pool", 0.1), ("llama-v2-pool", 0.2)):
            answer = RouteAnswer(f"r{i}{version}", *RULE, version, 200, first_byte, 0.3)
            admin.recorders[i % 2].observe_route(answer)
        if i % 20 == 19:
            clock.now += 0.2
            await controller.tick()
    run = run_of(controller)
    assert (run.state.failures, run.state.weight) == (2, 0)  # TTFT (first bytes) 2x stable
    check = run.history[-1]["checks"][0]
    assert check["metric"] == "ttft-p90" and check["value"] == pytest.approx(2.0, rel=0.1)
