"""The InferencePool backend kind: a route's backendRef to a pool, answered by its picker.

``group: inference.networking.k8s.io, kind: InferencePool`` (or the v1alpha2 group) in an
HTTPRoute rule: compile resolves the pool's endpoints (its selector's ready Pods, one endpoint per
target port), its objectives and picker settings, and hands them to the pool's scheduler (one per
pool and process, kept across reloads). Per request the backend reads the JSON body (the body
stage: ``needs_body``), asks the scheduler — in-process, or the pool's external endpoint picker
over ext_proc when ``endpointPickerRef`` names one — and measures the answer with a response tap.
Before the pick, the pool's InferenceModelRewrites may send the request as another model
(:mod:`inference_ext.rewrite`): the body's ``model`` is replaced and the picker schedules the
target. ``backendRef.port`` is ignored, as the spec says.
"""

from __future__ import annotations

import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from gateway.backends.base import (
    BackendRef,
    BackendResolveError,
    Destination,
    Endpoint,
    Outcome,
    Pick,
    PickRefused,
    ProxyRequest,
    ResolveContext,
)
from gateway.observability.genai import GenAiMetrics, tpot_of
from gateway.snapshot import CompiledRule
from inference_ext.api import (
    POOL_GROUP,
    X_GROUP,
    EndpointPicker,
    InferenceModelRewrite,
    InferenceObjective,
    InferencePool,
    InferencePoolAlpha,
    Pod,
    PoolSpec,
    pool_spec,
)
from inference_ext.picker.config import picker_config
from inference_ext.picker.scheduler import PoolScheduler, PoolView, key_of
from inference_ext.request import (
    FEEDBACK_HEADER,
    MODEL_REWRITE_HEADER,
    OBJECTIVE_HEADER,
    SUBSET_HEADER,
    InferenceRequest,
    RequestError,
    feedback_of,
    parse_body,
    subset_of,
)
from inference_ext.rewrite import (
    Decision,
    PoolRewrites,
    RewriteError,
    RewriteState,
    VersionSample,
    pool_rewrites,
    replace_model,
    route_version,
)
from inference_ext.rewrite.mirror import MirrorCopy, MirrorPlan
from inference_ext.rollout.agreement import AnswerReader
from inference_ext.scheduling import SchedulingError
from inference_ext.telemetry import GenAiTap, InferenceMetrics, operation_of

log = logging.getLogger(__name__)

AMBIENT_GROUP = "inference.ambient.dev"


class Pools:
    """The schedulers of this process, by ``namespace/name``: they outlive reloads."""

    def __init__(self, genai: GenAiMetrics) -> None:
        self.schedulers: dict[str, PoolScheduler] = {}
        self.metrics = InferenceMetrics(self.gauges, genai)
        self.pickers: dict[str, Any] = {}  # "host:port" -> ExtProcPicker (one channel each)

    def picker(self, target: str, timeout: float) -> Any:
        """The ext_proc client of an external endpoint picker, kept across reloads."""
        from inference_ext.extproc.client import ExtProcPicker

        picker = self.pickers.get(target)
        if picker is None or picker.timeout != timeout:
            picker = self.pickers[target] = ExtProcPicker(target, timeout)
        return picker

    def scheduler(self, name: str, view: PoolView) -> PoolScheduler:
        """The pool's scheduler, reconfigured with ``view`` (made on first use)."""
        scheduler = self.schedulers.get(name)
        if scheduler is None:
            scheduler = self.schedulers[name] = PoolScheduler(name, view)
        else:
            scheduler.reconfigure(view)
        return scheduler

    def gauges(self) -> list[tuple[str, float, float, int]]:
        """(pool, mean KV use, mean waiting queue, ready endpoints) from the latest scrapes."""
        rows = []
        for name, scheduler in sorted(self.schedulers.items()):
            keys = list(scheduler.view.endpoints)
            seen = [scheduler.signals[k] for k in keys if k in scheduler.signals]
            kv = sum(s.kv_cache for s in seen) / len(seen) if seen else 0.0
            queue = sum(s.waiting for s in seen) / len(seen) if seen else 0.0
            rows.append((name, kv, queue, len(keys)))
        return rows

    def describe(self) -> dict[str, Any]:
        """This process's pools for ``/plugins/inference``: servers, queue, recent decisions."""
        return {"pools": [s.describe() for _, s in sorted(self.schedulers.items())]}

    def start(self) -> None:
        """Start every pool's scraping (in the serving loop)."""
        for scheduler in self.schedulers.values():
            scheduler.start()

    async def stop(self) -> None:
        """Stop every pool's scraping; close the pickers' channels."""
        for scheduler in self.schedulers.values():
            await scheduler.stop()
        for picker in self.pickers.values():
            await picker.close()


@dataclass(slots=True)
class Rewritten:
    """A request sent as another model, from its pick to its response's end (tries included)."""

    decision: Decision
    status: int = 0  # the last try's (or the refusal's), for the sample when no head came
    mirror: MirrorPlan | None = None  # drawn to be copied to the canary (answer agreement)
    body: bytes = b""  # what stable was sent, for the canary's copy


@dataclass(frozen=True, slots=True)
class PickState:
    """What a pick hands to ``done``: the request as the scheduler saw it; with an external
    picker, its open stream and the ordered fallbacks it named."""

    request: InferenceRequest
    started: float
    call: Any = None  # ExtProcCall: told how the response went, then ended
    fallbacks: tuple[Endpoint, ...] = ()
    rewritten: Rewritten | None = None  # when a rewrite sent the request as another model


FALLBACKS_KEPT = 4096  # requests whose failed try left an external picker's fallbacks to use
REWRITES_KEPT = 65536  # rewritten requests in flight (each ends at its response's end)


class InferencePoolBackend:
    """A Backend over one pool's scheduler (see the module docstring)."""

    needs_body = True

    def __init__(
        self,
        destination: Destination,
        spec: PoolSpec,
        scheduler: PoolScheduler,
        objectives: Mapping[str, int],
        metrics: InferenceMetrics,
        external: Any = None,
        rewrites: PoolRewrites | None = None,
        rewrite_state: RewriteState | None = None,
    ) -> None:
        self.destination = destination
        self.spec = spec
        self.scheduler = scheduler
        self.objectives = objectives
        self.metrics = metrics
        self.external = external  # an ExtProcPicker when the pool names an endpoint picker
        self.rewrites = rewrites or PoolRewrites()
        self.rewrite_state = rewrite_state or RewriteState()
        self.random = random.Random()
        # request id -> the external picker's fallbacks not tried yet (a retry takes the next)
        self.fallbacks: OrderedDict[str, tuple[Endpoint, ...]] = OrderedDict()
        # request -> its rewrite, from the first pick to the tap's end (by the request object:
        # clients may repeat a request id)
        self.rewritten: OrderedDict[ProxyRequest, Rewritten] = OrderedDict()
        self._last: tuple[bytes, tuple[str, bytes, bool]] | None = None

    def inference_request(
        self, request: ProxyRequest, tried: tuple[Endpoint, ...]
    ) -> InferenceRequest:
        """The request as the scheduler sees it; PickRefused(400) for a body it cannot read."""
        head = request.head
        body = request.body or b""
        try:
            model, prompt, stream = self._parse(body)
        except RequestError as exc:
            raise PickRefused(400, str(exc)) from exc
        objective = head.get(OBJECTIVE_HEADER) or ""
        return InferenceRequest(
            request_id=request.request_id,
            model=model,
            prompt=prompt,
            priority=self.objectives.get(objective, 0),
            objective=objective,
            stream=stream,
            body_size=len(body),
            subset=subset_of(head.get(SUBSET_HEADER)),
            exclude=frozenset(key_of(e) for e in tried),
        )

    def pick(
        self, request: ProxyRequest, tried: tuple[Endpoint, ...] = ()
    ) -> Pick | Coroutine[Any, Any, Pick]:
        """The picker's first choice — at once when the pool has capacity; a coroutine when
        the request waits in the pool's queue or asks an external picker. A retry asks the
        in-process scheduler again (it avoids the endpoints tried) or takes the external
        picker's next fallback. The first pick applies the pool's rewrites (a retry keeps the
        rewritten body)."""
        if tried:
            rewritten = self.rewritten.get(request)
        else:
            feedback = request.head.get(FEEDBACK_HEADER)
            if feedback is not None:
                self._feedback(feedback)
            rewritten = self._rewrite(request)
        wanted = self.inference_request(request, tried)
        if self.external is not None:
            return self._external(request, wanted, tried, rewritten)
        try:
            chosen = self.scheduler.try_schedule(wanted)
        except SchedulingError as exc:
            raise self._refused(wanted, rewritten, exc) from exc
        if chosen is None:
            return self._queued(wanted, rewritten)
        return Pick(chosen[0], PickState(wanted, time.perf_counter(), rewritten=rewritten))

    def _feedback(self, value: str) -> None:
        """Scores for earlier answers riding on this request (PickRefused 400 if unreadable)."""
        try:
            scores = feedback_of(value)
        except RequestError as exc:
            raise PickRefused(400, str(exc)) from exc
        for request_id, score in scores:
            self.rewrite_state.report_feedback(request_id, score)

    def _rewrite(self, request: ProxyRequest) -> Rewritten | None:
        """Send the request as the model its rewrite rule (or header) says: the body's
        ``model`` replaced in place; None when it goes as it is."""
        body = request.body
        if not body or (not self.rewrites.rules and request.head.get(MODEL_REWRITE_HEADER) is None):
            return None
        try:
            model, prompt, stream = self._parse(body)
            if not model:
                return None  # nothing to replace: a body without a model goes as it is
            decision = self.rewrites.decide(
                model, request.head, body, self.rewrite_state, self.random
            )
        except (RequestError, RewriteError) as exc:
            raise PickRefused(400, str(exc)) from exc
        if decision is None:
            return None
        if decision.target != model:
            new = replace_model(body, decision.target)
            request.body = new
            self._last = (new, (decision.target, prompt, stream))  # the same prompt bytes
        rewritten = self.rewritten[request] = Rewritten(decision)
        if decision.rewrite:
            plan = self.rewrite_state.mirror_plan(decision.rewrite, decision.incoming)
            if (
                plan is not None
                and decision.target != plan.canary
                and self.random.random() < plan.fraction
            ):
                rewritten.mirror = plan
                rewritten.body = request.body or b""
        if len(self.rewritten) > REWRITES_KEPT:
            self.rewritten.popitem(last=False)
        if decision.rewrite:
            request.annotate("inference.rewrite", decision.rewrite)
        return rewritten

    async def _queued(self, wanted: InferenceRequest, rewritten: Rewritten | None) -> Pick:
        try:
            chosen = await self.scheduler.wait_and_pick(wanted)
        except SchedulingError as exc:
            raise self._refused(wanted, rewritten, exc) from exc
        return Pick(chosen[0], PickState(wanted, time.perf_counter(), rewritten=rewritten))

    def _refused(
        self, wanted: InferenceRequest, rewritten: Rewritten | None, exc: SchedulingError
    ) -> PickRefused:
        self.metrics.request_done(_incoming(wanted, rewritten), wanted.model, exc.status, 0.0)
        if rewritten is not None:
            rewritten.status = exc.status
        return PickRefused(exc.status, exc.message)

    async def _external(
        self,
        request: ProxyRequest,
        wanted: InferenceRequest,
        tried: tuple[Endpoint, ...],
        rewritten: Rewritten | None,
    ) -> Pick:
        """Ask the pool's endpoint picker over ext_proc (the stream stays open until the
        response ends, so it counts the request in flight); its failure mode when it fails."""
        from inference_ext.extproc.client import ExtProcUnavailable

        if tried:
            left = self.fallbacks.pop(wanted.request_id, ())
            untried = [e for e in left if e not in tried]
            if untried:
                return Pick(
                    untried[0],
                    PickState(wanted, time.perf_counter(), None, tuple(untried[1:]), rewritten),
                )
        allowed = self.scheduler.view.endpoints
        try:
            call = await self.external.open(
                request.head, request.body, allowed, request_id=wanted.request_id
            )
        except ExtProcUnavailable as exc:
            picker = self.spec.picker
            assert picker is not None
            if picker.failure_mode != "FailOpen":
                raise PickRefused(
                    503,
                    f"the endpoint picker of InferencePool {self.scheduler.name} failed "
                    f"(failureMode FailClose): {exc}",
                ) from exc
            log.info(
                "InferencePool %s: its endpoint picker failed (%s); FailOpen: choosing itself",
                self.scheduler.name,
                exc,
            )
            request.annotate("inference.picker", "fail-open")
            chosen = self.scheduler.pick(wanted)
            return Pick(chosen[0], PickState(wanted, time.perf_counter(), rewritten=rewritten))
        endpoints = call.endpoints
        return Pick(
            endpoints[0],
            PickState(wanted, time.perf_counter(), call, tuple(endpoints[1:]), rewritten),
        )

    def done(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """The try ended: the picker's accounting, the objective's metrics."""
        state = outcome.state
        if not isinstance(state, PickState):
            return
        call = state.call
        if call is not None:
            if outcome.status:
                call.response_started(outcome.status, endpoint)
                call.response_ended()
            else:
                call.close()
        if self.external is not None:
            request_id = state.request.request_id
            if not outcome.ok and state.fallbacks and not outcome.aborted:
                self.fallbacks[request_id] = state.fallbacks  # for the retry, if one follows
                if len(self.fallbacks) > FALLBACKS_KEPT:
                    self.fallbacks.popitem(last=False)
            else:
                self.fallbacks.pop(request_id, None)
        else:
            self.scheduler.served(state.request, endpoint, outcome)
        status = _status_of(outcome)
        wanted, rewritten = state.request, state.rewritten
        self.metrics.request_done(
            _incoming(wanted, rewritten), wanted.model, status, time.perf_counter() - state.started
        )
        if rewritten is not None:
            rewritten.status = status

    def tap(self, request: ProxyRequest) -> GenAiTap:
        """Measures the answer (time to first token, usage) and annotates the request."""
        model = ""
        if request.body:
            try:
                model = self._parse(request.body)[0]
            except RequestError:
                model = ""
        return GenAiTap(
            self.metrics,
            request,
            model,
            operation_of(request.head.path),
            self._answered,
            self._answer_head,
        )

    def _answer_head(self, tap: GenAiTap) -> None:
        """A request drawn for a canary copy reads its answer's text as it passes (200 only)."""
        rewritten = self.rewritten.get(tap.request)
        if rewritten is not None and rewritten.mirror is not None and tap.status == 200:
            tap.answer = AnswerReader()

    def _answered(self, tap: GenAiTap, seconds: float, ttft: float | None) -> None:
        """A request's answer ended: its target model for the tap; a version sample when a
        rewrite rule chose it, and one of the backendRef when its route rule's weights are
        driven (overridden)."""
        rewritten = self.rewritten.pop(tap.request, None)
        rule = tap.request.rule
        if rule is not None and rule.override is not None:
            self._route_sample(tap, rule, seconds, ttft, rewritten)
        if rewritten is None:
            return
        decision = rewritten.decision
        tap.model = decision.target
        if not decision.rewrite:
            return
        if rewritten.mirror is not None and tap.answer is not None:
            self._copy_to_canary(tap, rewritten, rewritten.mirror)
        self.rewrite_state.report(
            self._sample(
                tap, seconds, ttft, decision.rewrite, decision.incoming, decision.target,
                tap.status or rewritten.status, decision.session,
            )
        )  # fmt: skip

    def _route_sample(
        self,
        tap: GenAiTap,
        rule: CompiledRule,
        seconds: float,
        ttft: float | None,
        rewritten: Rewritten | None,
    ) -> None:
        """An answer through a route rule whose weights are driven (overridden): a sample of
        the backendRef that served it (this pool), named ``HTTPRoute ns/name/rule``."""
        choice, ref = tap.request.choice, rule.ref
        if choice is None or choice.name is None or ref.rule_name is None:
            return
        status = tap.status or (rewritten.status if rewritten is not None else 0)
        where = route_version(f"{ref.namespace}/{ref.name}", ref.rule_name)
        self.rewrite_state.report(
            self._sample(tap, seconds, ttft, where, "", choice.name, status, None)
        )

    def _sample(
        self,
        tap: GenAiTap,
        seconds: float,
        ttft: float | None,
        rewrite: str,
        incoming: str,
        target: str,
        status: int,
        session: str | None,
    ) -> VersionSample:
        tokens = tap.output_tokens or 0
        return VersionSample(
            request_id=tap.request.request_id,
            pool=self.scheduler.name,
            rewrite=rewrite,
            incoming_model=incoming,
            target_model=target,
            status=status,
            ttft=ttft,
            tpot=tpot_of(seconds, ttft, tokens) if ttft is not None and tokens > 1 else None,
            output_tokens=tokens,
            duration=seconds,
            session=session,
        )

    def _copy_to_canary(self, tap: GenAiTap, rewritten: Rewritten, plan: MirrorPlan) -> None:
        """Send stable's request to the canary in the background and count the agreement."""
        try:
            text = tap.answer.text()
        except ValueError:
            return  # not an answer (the count skips it, as a stable failure)
        request = tap.request
        copy = MirrorCopy(plan, rewritten.body, request.head.path, text, request.request_id)
        _, prompt, stream = self._parse(rewritten.body)
        scheduler = self.scheduler

        def pick(copy: MirrorCopy) -> tuple[Endpoint, Callable[[], None]]:
            wanted = InferenceRequest(
                f"{copy.request_id}-mirror", plan.canary, prompt, stream=stream
            )
            endpoint = scheduler.pick(wanted)[0]
            return endpoint, lambda: scheduler.release(endpoint)

        self.rewrite_state.mirror.start(copy, pick)

    def _parse(self, body: bytes) -> tuple[str, bytes, bool]:
        """``parse_body``, once per body: the tap is made just before the pick reads the same
        bytes (one entry, by identity: a retry's pick, later, parses again)."""
        last = self._last
        if last is not None and last[0] is body:
            return last[1]
        parsed = parse_body(body)
        self._last = (body, parsed)
        return parsed

    def describe(self) -> Mapping[str, Any]:
        """A JSON-able view for /config_dump."""
        picker = self.spec.picker
        return {
            "kind": "InferencePool",
            "pool": self.scheduler.name,
            "apiVersion": self.spec.version,
            "endpoints": sorted(self.scheduler.view.endpoints),
            "objectives": dict(self.objectives),
            "rewrites": self.rewrites.describe(self.rewrite_state),
            "endpointPicker": (
                f"{picker.kind} {self.spec.namespace}/{picker.name}:{picker.port} "
                f"({picker.failure_mode})"
                if picker
                else "in-process"
            ),
        }


def _incoming(wanted: InferenceRequest, rewritten: Rewritten | None) -> str:
    """The model the client named (``wanted`` names the one it is sent as)."""
    return rewritten.decision.incoming if rewritten is not None else wanted.model


def _status_of(outcome: Outcome) -> int:
    """The status the try ended with, as the client would see it when no head arrived: 499 when
    the client left, 504 for a timeout, else 503 (the endpoint could not answer)."""
    if outcome.status:
        return outcome.status
    if outcome.aborted:
        return 499
    return 504 if "timeout" in outcome.failure else 503


def merge_pool_views(views: list[dict[str, Any]]) -> dict[str, Any]:
    """Every worker's pools in one list (each pool's picker is per worker: with ``--workers N``
    a pool appears N times, each with ``worker``)."""
    if len(views) == 1:
        return views[0]
    return {
        "pools": [
            {"worker": index, **pool}
            for index, view in enumerate(views)
            for pool in view.get("pools", ())
        ]
    }


def find_pool(ctx: ResolveContext, namespace: str, name: str, group: str) -> PoolSpec | None:
    """The pool of either API version, or None."""
    if group == POOL_GROUP:
        found = ctx.typed(POOL_GROUP, "InferencePool", namespace, name)
        return pool_spec(found) if isinstance(found, InferencePool) else None
    found = ctx.typed(X_GROUP, "InferencePool", namespace, name)
    return pool_spec(found) if isinstance(found, InferencePoolAlpha) else None


def pool_view(ctx: ResolveContext, spec: PoolSpec) -> PoolView:
    """The pool's endpoints, objectives and picker settings as the configuration has them."""
    endpoints: dict[str, Endpoint] = {}
    protocol = "h2c" if spec.h2c else "http/1.1"
    for pod in _typed_list(ctx, "", "Pod", spec.namespace, Pod):
        if pod.ready and spec.selects(pod.metadata.labels) and pod.status.pod_ip:
            for port in spec.ports:
                endpoint = Endpoint(pod.status.pod_ip, port, protocol)
                endpoints[key_of(endpoint)] = endpoint
    objectives = {
        o.metadata.name: o.spec.priority or 0
        for o in _typed_list(ctx, X_GROUP, "InferenceObjective", spec.namespace, InferenceObjective)
        if o.spec.pool_ref.name == spec.name
    }
    pickers = [
        p
        for p in _typed_list(ctx, AMBIENT_GROUP, "EndpointPicker", spec.namespace, EndpointPicker)
        if p.spec.pool_ref.name == spec.name
    ]
    pickers.sort(key=lambda p: (str(p.metadata.creation_timestamp or ""), p.metadata.name))
    config = picker_config(pickers[0].spec if pickers else None)
    return PoolView(config, dict(sorted(endpoints.items())), objectives)


def rewrites_of(ctx: ResolveContext, spec: PoolSpec) -> PoolRewrites:
    """The pool's InferenceModelRewrites, compiled."""
    found = _typed_list(
        ctx, X_GROUP, "InferenceModelRewrite", spec.namespace, InferenceModelRewrite
    )
    return pool_rewrites(found, spec.name)


def _typed_list(
    ctx: ResolveContext, group: str, kind: str, namespace: str, model: type[BaseModel]
) -> list[Any]:
    out = []
    for raw in ctx.list(group, kind, namespace):
        name = str((raw.get("metadata") or {}).get("name") or "")
        found = ctx.typed(group, kind, namespace, name)
        if isinstance(found, model):
            out.append(found)
    return out


def make_factory(pools: Pools, rewrites: RewriteState, group: str) -> Any:
    """The backend factory for one of the pool API groups."""

    def resolve(ref: BackendRef, ctx: ResolveContext) -> InferencePoolBackend:
        spec = find_pool(ctx, ref.namespace, ref.name, group)
        if spec is None:
            raise BackendResolveError(
                "BackendNotFound", f"InferencePool {ref.namespace}/{ref.name} not found"
            )
        view = pool_view(ctx, spec)
        scheduler = pools.scheduler(f"{spec.namespace}/{spec.name}", view)
        external = None
        if spec.picker is not None:
            external = pools.picker(_picker_target(ctx, spec), view.config.picker_timeout)
        scheduler.passive = external is not None  # the external picker scrapes, not this one
        destination = Destination(
            spec.name, spec.namespace, f"{spec.name}.{spec.namespace}.inference", "InferencePool"
        )
        return InferencePoolBackend(
            destination,
            spec,
            scheduler,
            view.objectives,
            pools.metrics,
            external,
            rewrites_of(ctx, spec),
            rewrites,
        )

    return resolve


def _picker_target(ctx: ResolveContext, spec: PoolSpec) -> str:
    """Where the pool's endpoint picker Service listens (BackendNotFound if nowhere)."""
    from gateway.backends.service import resolve_service

    picker = spec.picker
    assert picker is not None
    if (picker.group, picker.kind) != ("", "Service"):
        raise BackendResolveError(
            "InvalidKind",
            f"InferencePool {spec.namespace}/{spec.name}: endpointPickerRef kind "
            f"{picker.kind!r} is not supported (a Service is)",
        )
    service = resolve_service(
        BackendRef("", "Service", picker.name, spec.namespace, picker.port), ctx
    )
    if not service.endpoints:
        raise BackendResolveError(
            "BackendNotFound",
            f"InferencePool {spec.namespace}/{spec.name}: endpoint picker Service "
            f"{spec.namespace}/{picker.name} has no ready endpoint",
        )
    return str(service.endpoints[0])


def build_scheduler(resources: ResolveContext, namespace: str, name: str) -> PoolScheduler:
    """A scheduler for ``ambient epp``: the pool as ``resources`` describe it."""
    for group in (POOL_GROUP, X_GROUP):
        spec = find_pool(resources, namespace, name, group)
        if spec is not None:
            return PoolScheduler(f"{namespace}/{name}", pool_view(resources, spec))
    raise LookupError(f"InferencePool {namespace}/{name} not found")
