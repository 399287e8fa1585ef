"""The rollouts' one control loop, in the admin process (the ``--workers`` supervisor).

Every tick it reads the compiled rollouts of the live configuration, gathers every serving
process's per-version aggregates (worker call ``rollouts.drain``), analyses each rollout whose
interval is up, and pushes the resulting weights (and, for an ``agreement`` check, the mirror
plan) to every serving process (sticky worker call ``rollouts.plan``: a restarted worker gets
them before it binds). States are saved in
``--state-dir`` at each change, so a restarted gateway resumes at the recorded step. Each
rollout's status (:mod:`.status`) is published at each change (``AdminContext.statuses``); in a
cluster the leader writes it to the object, and a gateway with no saved state resumes from it.
A replica that does not lead does not analyse: it follows the written status, so every replica
serves the leader's weights, and is steered through the leader only.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from gateway.live_status import ObjectRef
from gateway.plugins import AdminContext
from inference_ext.api import AMBIENT_GROUP
from inference_ext.rollout.analysis import (
    CheckResult,
    Phase,
    RolloutState,
    advance,
    decide,
    evaluate_builtin,
    evaluate_value,
    resumed,
)
from inference_ext.rollout.api import RolloutSpec
from inference_ext.rollout.prometheus import QueryError, instant_query
from inference_ext.rollout.recorder import (
    Drained,
    Mirror,
    RuleKey,
    ServingPlan,
    VersionKey,
    Weights,
)
from inference_ext.rollout.sketch import Aggregate
from inference_ext.rollout.status import recorded_state, rollout_status
from inference_ext.rollout.store import StateStore

log = logging.getLogger("inference_ext.rollout")

DRAIN = "rollouts.drain"
PLAN = "rollouts.plan"
SCORE = "rollouts.score"
REPORT = "rollouts"  # the report's name: its dump is the snapshot's dump["rollouts"]
MAX_TICK = 1.0  # seconds: how soon a new rollout or a changed spec is picked up


class RolloutError(Exception):
    """An admin action that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class _Run:
    """One rollout's live state in the controller."""

    spec: RolloutSpec
    state: RolloutState
    problem: str | None
    due: float
    window: dict[str, Aggregate] = field(default_factory=dict)  # by version
    history: deque[dict[str, Any]] = field(default_factory=deque)
    checks: tuple[CheckResult, ...] = ()  # the last analysis (none yet: empty)

    @property
    def phase(self) -> Phase:
        """The phase shown: Pending while the target is missing."""
        return Phase.PENDING if self.problem else self.state.phase


def _ref(spec: RolloutSpec) -> ObjectRef:
    return ObjectRef(AMBIENT_GROUP, "InferenceRollout", spec.namespace, spec.name)


def compiled_rollouts(dump: Any) -> tuple[list[RolloutSpec], dict[str, str]]:
    """The compiled rollouts of a snapshot's dump, and the problem of each unresolved one."""
    report = dump.get(REPORT, {}) if isinstance(dump, dict) else {}
    return list(report.get("specs", [])), dict(report.get("problems", {}))


class RolloutController:
    """Runs every configured rollout."""

    def __init__(
        self,
        context: AdminContext,
        *,
        history: int = 500,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context
        self.store = StateStore(context.state_dir) if context.state_dir else None
        self.history = history
        self.clock = clock
        self.runs: dict[str, _Run] = {}
        self.failed_checks: dict[tuple[str, str], int] = {}  # (rollout, metric) -> count
        self._version = -1
        self._pushed: ServingPlan | None = None
        self._task: asyncio.Task[None] | None = None
        self._client = httpx.AsyncClient()
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """Load the configured rollouts (and saved states) and push their weights."""
        async with self._lock:
            self._sync()
            await self._push()

    async def start(self) -> None:
        """:meth:`load`, then tick until stopped."""
        await self.load()
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        """Stop ticking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._client.aclose()

    async def _loop(self) -> None:
        while True:
            intervals = [run.spec.interval for run in self.runs.values()]
            # Half the shortest interval: an interval is judged at most that late.
            await asyncio.sleep(min([MAX_TICK, *intervals]) / 2)
            try:
                await self.tick()
            except Exception:
                log.exception("rollouts: tick failed")

    async def tick(self) -> None:
        """One pass: config, measurements, due analyses, weights."""
        async with self._lock:
            await self._gather()  # before a new spec resets the window: what it measured is old
            self._sync()
            now = self.clock()
            leads = self.context.statuses.leads()
            for run in list(self.runs.values()):
                if leads:
                    await self._step(run, now)
                else:
                    self._follow(run, now)
            await self._push()

    # -- config ---------------------------------------------------------------------------------

    def _sync(self) -> None:
        snapshot = self.context.holder.current
        if snapshot.version == self._version:
            return
        self._version = snapshot.version
        specs, problems = compiled_rollouts(snapshot.dump)
        now = self.clock()
        runs: dict[str, _Run] = {}
        for spec in specs:
            run = self.runs.get(spec.key)
            if run is None:
                saved, source = self._saved(spec)
                state = resumed(spec, saved)
                run = _Run(
                    spec, state, problems.get(spec.key), now + spec.interval,
                    history=deque(maxlen=self.history),
                )  # fmt: skip
                if saved is not None:
                    message = f"resumed {state.phase} at step {state.step} from {source}"
                    self._event(run, "resumed", message)
            else:
                run.problem = problems.get(spec.key)
                if spec.digest != run.spec.digest:
                    run.state = resumed(spec, run.state)
                    run.spec = spec
                    run.window = {}
                    run.checks = ()
                    run.due = now + spec.interval
                    self._event(run, "spec-changed", run.state.message)
            runs[spec.key] = run
            self._save(run)
            self._publish(run)
        for gone in self.runs.keys() - runs.keys():
            self.context.statuses.forget(_ref(self.runs[gone].spec))
        self.runs = runs

    def _saved(self, spec: RolloutSpec) -> tuple[RolloutState | None, str]:
        """The state to resume from and where it was: --state-dir, else the object's status."""
        saved = self.store.load(spec.namespace, spec.name) if self.store else None
        if saved is not None:
            return saved, "the state dir"
        return recorded_state(self.context.statuses.recorded(_ref(spec))), "its status"

    # -- measurements -------------------------------------------------------------------------

    async def _gather(self) -> None:
        if not self.runs:
            return  # nothing to measure: no round trip to the workers
        answers: list[Drained] = await self.context.call(DRAIN, None)
        wanted: dict[VersionKey, tuple[_Run, str]] = {}
        for run in self.runs.values():
            for version in (run.spec.stable, run.spec.canary):
                wanted[(run.spec.rewrite, run.spec.model, version)] = (run, version)
        foreign = [pair for answer in answers for pair in answer.feedback]
        for answer in answers:
            for key, state in answer.versions:
                target = wanted.get(key)
                if target is not None:
                    run, version = target
                    run.window.setdefault(version, Aggregate()).merge(Aggregate.from_state(state))
            for rollout, (agreed, compared) in answer.agreement.items():
                agreeing = self.runs.get(rollout)
                if agreeing is not None:
                    canary = agreeing.window.setdefault(agreeing.spec.canary, Aggregate())
                    canary.score("agreement", agreed, compared)
        for request_id, score in foreign:  # each worker counts it if it served that answer
            await self.score(request_id, "feedback-score", score)

    async def score(self, request_id: str, metric: str, value: float) -> bool:
        """Count a score for an answer in the serving process that gave it; False if none did."""
        answers = await self.context.call(SCORE, (request_id, metric, value))
        return any(answers)

    # -- analysis -----------------------------------------------------------------------------

    async def _step(self, run: _Run, now: float) -> None:
        if run.problem or run.state.phase not in (Phase.PROGRESSING, Phase.PENDING):
            run.window = {}
            return
        if run.state.step == 0:  # not started (or retrying from 0%): first step, nothing to judge
            decision = advance(run.spec, run.state)
            self._apply(run, decision.state, decision.event, [])
            run.window, run.due = {}, now + run.spec.interval
            return
        if now < run.due:
            return
        checks = await self._checks(run)
        decision = decide(run.spec, run.state, checks)
        self._apply(run, decision.state, decision.event, checks)
        run.window, run.due = {}, now + run.spec.interval

    def _follow(self, run: _Run, now: float) -> None:
        """Take the state the recorded status gives, when it is for this rollout's spec."""
        recorded = recorded_state(self.context.statuses.recorded(_ref(run.spec)))
        run.window = {}  # the leader judges its own traffic
        if recorded is None or (recorded.identity, recorded.digest) != (
            run.spec.identity,
            run.spec.digest,
        ):
            return
        if recorded != run.state:
            run.state, run.due = recorded, now + run.spec.interval
            self._save(run)
            self._publish(run)
            self._event(run, "followed", f"{recorded.phase} at step {recorded.step}")

    async def _checks(self, run: _Run) -> list[CheckResult]:
        stable = run.window.get(run.spec.stable, Aggregate())
        canary = run.window.get(run.spec.canary, Aggregate())
        results: list[CheckResult] = []
        for check in run.spec.checks:
            if check.prometheus_address is None or check.prometheus_query is None:
                results.append(evaluate_builtin(check, stable, canary, run.spec.min_requests))
                continue
            try:
                value = await instant_query(
                    self._client, check.prometheus_address, check.prometheus_query
                )
                results.append(evaluate_value(check, value))
            except QueryError as exc:
                results.append(evaluate_value(check, None, str(exc)))
        return results

    def _apply(self, run: _Run, state: RolloutState, event: str, checks: list[CheckResult]) -> None:
        changed = state != run.state
        run.state = state
        if checks:
            run.checks = tuple(checks)
        run.history.append(
            {
                "time": time.time(),
                "weight": state.weight,
                "step": state.step,
                "phase": str(state.phase),
                "event": event,
                "checks": [c.to_json() for c in checks],
            }
        )
        for check in checks:
            if check.verdict == "fail":
                failed = (run.spec.key, check.metric)
                self.failed_checks[failed] = self.failed_checks.get(failed, 0) + 1
                log.warning(
                    "rollout %s: check %s failed: stable %s canary %s (%s)",
                    run.spec.key, check.metric, check.stable, check.canary, check.reason,
                    extra={
                        "event": "rollout.check-failed", "rollout": run.spec.key,
                        "metric": check.metric, "stable": check.stable, "canary": check.canary,
                        "value": check.value, "limit": check.limit,
                    },
                )  # fmt: skip
        self._event(run, event, state.message)
        if changed:
            self._save(run)
        self._publish(run)

    def _event(self, run: _Run, event: str, message: str) -> None:
        level = {"rolled-back": logging.WARNING, "aborted": logging.WARNING, "held": logging.DEBUG}
        log.log(
            level.get(event, logging.INFO),
            "rollout %s: %s: %s",
            run.spec.key,
            event,
            message,
            extra={
                "event": f"rollout.{event}",
                "rollout": run.spec.key,
                "phase": str(run.state.phase),
                "step": run.state.step,
                "weight": run.state.weight,
            },
        )

    def _save(self, run: _Run) -> None:
        if self.store is not None:
            self.store.save(run.spec.namespace, run.spec.name, run.state)

    def _publish(self, run: _Run) -> None:
        status = rollout_status(run.spec, run.state, run.problem, run.checks or None)
        self.context.statuses.publish(_ref(run.spec), status)

    # -- weights ------------------------------------------------------------------------------

    def desired_weights(self) -> Weights:
        """Each started rewrite rollout's split: ``{(rewrite, model): {stable: %, canary: %}}``."""
        return self._splits(route=False)

    def desired_routes(self) -> Weights:
        """Each started route rollout's split: ``{(route, rule): {stable: %, canary: %}}``."""
        return self._splits(route=True)

    def _splits(self, *, route: bool) -> Weights:
        weights: Weights = {}
        for run in self.runs.values():
            spec = run.spec
            if run.problem or run.phase is Phase.PENDING or (spec.route is not None) != route:
                continue
            canary = run.state.weight
            key = (spec.rewrite, spec.model)
            if spec.route is not None and spec.rule is not None:
                key = (spec.route, spec.rule)
            weights[key] = {spec.stable: 100 - canary, spec.canary: canary}
        return weights

    def desired_mirrors(self) -> dict[RuleKey, Mirror]:
        """The mirror plan of each analysing rollout with an ``agreement`` check."""
        mirrors: dict[RuleKey, Mirror] = {}
        for run in self.runs.values():
            if run.problem or run.phase not in (Phase.PROGRESSING, Phase.PAUSED):
                continue
            for check in run.spec.checks:
                if check.name == "agreement" and check.mirror is not None:
                    mirror = Mirror(run.spec.key, run.spec.canary, check.mirror, check.similarity)
                    mirrors[(run.spec.rewrite, run.spec.model)] = mirror
        return mirrors

    async def _push(self) -> None:
        plan = ServingPlan(self.desired_weights(), self.desired_mirrors(), self.desired_routes())
        if plan != self._pushed:
            await self.context.call(PLAN, plan)
            self._pushed = plan

    # -- admin actions ------------------------------------------------------------------------

    def find(self, name: str) -> _Run:
        """The rollout ``name`` or ``namespace/name``; RolloutError 404 naming it."""
        if "/" in name:
            run = self.runs.get(name)
            if run is None:
                raise RolloutError(f"no rollout {name!r}", 404)
            return run
        found = [run for run in self.runs.values() if run.spec.name == name]
        if not found:
            raise RolloutError(f"no rollout {name!r}", 404)
        if len(found) > 1:
            keys = ", ".join(sorted(run.spec.key for run in found))
            raise RolloutError(f"rollout name {name!r} is ambiguous: {keys}", 409)
        return found[0]

    async def act(self, name: str, action: str) -> _Run:
        """``pause``, ``resume``, ``promote`` or ``abort`` the rollout ``name``."""
        async with self._lock:
            run = self.find(name)
            if not self.context.statuses.leads():
                raise RolloutError(
                    f"rollout {run.spec.key}: this replica follows the leader's status; "
                    "steer the rollout through the leader's admin API",
                    409,
                )
            state = run.state
            terminal = state.phase in (Phase.SUCCEEDED, Phase.FAILED)
            if action == "pause":
                if terminal:
                    raise RolloutError(f"rollout {run.spec.key} is {state.phase}", 409)
                new = dataclasses.replace(state, phase=Phase.PAUSED, message="paused")
            elif action == "resume":
                if state.phase is not Phase.PAUSED:
                    raise RolloutError(f"rollout {run.spec.key} is not paused", 409)
                new = dataclasses.replace(state, phase=Phase.PROGRESSING, message="resumed")
                run.window, run.due = {}, self.clock() + run.spec.interval
            elif action == "promote":
                new = dataclasses.replace(
                    state, phase=Phase.SUCCEEDED, weight=100, message="promoted by hand"
                )
            elif action == "abort":
                new = dataclasses.replace(state, phase=Phase.FAILED, weight=0, message="aborted")
            else:
                raise RolloutError(
                    f"unknown action {action!r} (pause, resume, promote, abort)", 404
                )
            event = {"pause": "paused", "resume": "resumed", "promote": "promoted"}
            self._apply(run, new, event.get(action, "aborted"), [])
            await self._push()
            return run

    # -- views --------------------------------------------------------------------------------

    def describe(self, run: _Run) -> dict[str, Any]:
        """One rollout as ``/plugins/rollouts`` shows it."""
        spec, state = run.spec, run.state
        return {
            "name": spec.name,
            "namespace": spec.namespace,
            "phase": str(run.phase),
            "step": state.step,
            "steps": list(spec.steps),
            "weight": state.weight,
            "stable": spec.stable,
            "canary": spec.canary,
            "model": spec.model,
            "rewrite": spec.rewrite,
            "route": spec.route,
            "rule": spec.rule,
            "failures": state.failures,
            "threshold": spec.threshold,
            "interval": spec.interval,
            "message": run.problem or state.message,
            "history": list(run.history),
        }

    def status(self) -> dict[str, Any]:
        """Every rollout, by namespace and name."""
        return {"rollouts": [self.describe(self.runs[key]) for key in sorted(self.runs)]}
