"""Run-time weight overrides of named route rules: how a plugin (a rollout controller) moves a
rule's traffic between its backendRefs without a config change.

:data:`ROUTE_WEIGHTS` is process state (``PluginApi.route_weights()``): an override set for
(route ``namespace/name``, rule ``name``) is applied at once to every compiled rule of that name
still alive (the current snapshot's, and any older one a request still holds: requests that
already chose keep their choice) and, by compile, to every rule compiled later, so it survives
reloads until removed. Only named rules (GEP-995 ``rules[].name``) can be overridden. Rules
without an override are untouched: the data path's weighted choice reads the same precomputed
fields whether or not an override exists anywhere.

While overridden, a rule's backendRefs whose backend has no tap of its own (Services) are tapped
by :meth:`RouteWeights.sample`: each answer's status, time to the first body bytes and duration
is a :class:`RouteAnswer` for every observer (a rollout controller's per-version measurements).
Backends with a tap (an InferencePool's measures tokens) report their own.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from gateway.backends.base import ProxyRequest
from gateway.snapshot import CompiledRule

log = logging.getLogger(__name__)

RuleKey = tuple[str, str]  # (route "namespace/name", rule name)


@dataclass(frozen=True, slots=True)
class RouteAnswer:
    """One answer through a backendRef of a rule whose weights are overridden, measured by the
    gateway because the backend measures nothing itself (a Service; a pool reports its own)."""

    request_id: str
    route: str  # "namespace/name"
    rule: str
    backend_ref: str  # the backendRef's name
    status: int  # 0: no response head
    first_byte: float | None  # seconds from the tap's start to the first body bytes
    duration: float  # seconds from the tap's start (before the first try) to the end


class _AnswerTap:
    """Times one answer for :class:`RouteWeights` observers."""

    __slots__ = ("first", "registry", "request", "started", "status")

    def __init__(self, registry: RouteWeights, request: ProxyRequest) -> None:
        self.registry = registry
        self.request = request
        self.started = time.perf_counter()
        self.status = 0
        self.first: float | None = None

    def response_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        self.status = status

    def response_body(self, chunk: bytes) -> None:
        if self.first is None and chunk:
            self.first = time.perf_counter() - self.started

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """Nothing to read."""

    def response_end(self, complete: bool) -> None:
        request = self.request
        rule, choice = request.rule, request.choice
        if rule is None or choice is None:
            return
        ref, name = rule.ref, choice.name
        if name is None or ref.rule_name is None:
            return
        answer = RouteAnswer(
            request.request_id,
            f"{ref.namespace}/{ref.name}",
            ref.rule_name,
            name,
            self.status,
            self.first,
            time.perf_counter() - self.started,
        )
        for observer in self.registry.observers:
            try:
                observer(answer)
            except Exception:
                log.exception("route answer observer %r failed", observer)


class RouteWeights:
    """Overrides by route rule, and the live compiled rules they apply to."""

    def __init__(self) -> None:
        self._overrides: dict[RuleKey, dict[str, int]] = {}
        # By identity (a compiled rule's value equality could merge two snapshots' rules).
        self._rules: dict[RuleKey, weakref.WeakValueDictionary[int, CompiledRule]] = {}
        self._lock = threading.Lock()  # compile registers rules from a thread
        # Called with each RouteAnswer of an overridden rule's backendRefs without a tap.
        self.observers: list[Callable[[RouteAnswer], None]] = []

    def sample(self, request: ProxyRequest) -> _AnswerTap | None:
        """The tap factory an overridden rule's tapless backendRefs get (nothing when no one
        observes)."""
        return _AnswerTap(self, request) if self.observers else None

    def set(self, route: str, rule: str, weights: Mapping[str, int] | None) -> None:
        """Override the weights of HTTPRoute ``route``'s rule named ``rule``: backendRef name ->
        weight (a backendRef not named gets 0); None removes the override. ValueError names the
        backendRef whose weight is not an integer of 0 or more."""
        if weights is not None:
            for name, weight in weights.items():
                if isinstance(weight, bool) or not isinstance(weight, int) or weight < 0:
                    raise ValueError(
                        f"route {route} rule {rule!r}: the weight of backendRef {name!r} must "
                        f"be an integer of 0 or more, got {weight!r}"
                    )
        key = (route, rule)
        # Under the lock: a rule compile is registering must not get the previous override last.
        with self._lock:
            if weights is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = dict(weights)
            override = self._overrides.get(key)
            for compiled in list(self._rules[key].values()) if key in self._rules else []:
                compiled.reweigh(override, self.sample)

    def get(self, route: str, rule: str) -> dict[str, int] | None:
        """The override of ``route``'s rule ``rule``, or None."""
        found = self._overrides.get((route, rule))
        return dict(found) if found is not None else None

    def overrides(self) -> dict[str, dict[str, dict[str, int]]]:
        """Every override, JSON-able: route -> rule -> backendRef -> weight."""
        view: dict[str, dict[str, dict[str, int]]] = {}
        for (route, rule), weights in sorted(self._overrides.items()):
            view.setdefault(route, {})[rule] = dict(weights)
        return view

    def track(self, compiled: CompiledRule) -> None:
        """Called by compile for each named rule: apply its override now and on every change."""
        ref = compiled.ref
        if ref.rule_name is None:
            return
        key = (f"{ref.namespace}/{ref.name}", ref.rule_name)
        with self._lock:
            self._rules.setdefault(key, weakref.WeakValueDictionary())[id(compiled)] = compiled
            override = self._overrides.get(key)
            if override is not None:
                compiled.reweigh(override, self.sample)


ROUTE_WEIGHTS = RouteWeights()
