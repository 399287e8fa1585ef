"""Run-time weight overrides of named route rules: how a plugin (a rollout controller) moves a
rule's traffic between its backendRefs without a config change.

:data:`ROUTE_WEIGHTS` is process state (``PluginApi.route_weights()``): an override set for
(route ``namespace/name``, rule ``name``) is applied at once to every compiled rule of that name
still alive (the current snapshot's, and any older one a request still holds: requests that
already chose keep their choice) and, by compile, to every rule compiled later, so it survives
reloads until removed. Only named rules (GEP-995 ``rules[].name``) can be overridden. Rules
without an override are untouched: the data path's weighted choice reads the same precomputed
fields whether or not an override exists anywhere.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping

from gateway.snapshot import CompiledRule

RuleKey = tuple[str, str]  # (route "namespace/name", rule name)


class RouteWeights:
    """Overrides by route rule, and the live compiled rules they apply to."""

    def __init__(self) -> None:
        self._overrides: dict[RuleKey, dict[str, int]] = {}
        self._rules: dict[RuleKey, weakref.WeakSet[CompiledRule]] = {}
        self._lock = threading.Lock()  # compile registers rules from a thread

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
        with self._lock:
            if weights is None:
                self._overrides.pop(key, None)
            else:
                self._overrides[key] = dict(weights)
            live = list(self._rules.get(key, ()))
            override = self._overrides.get(key)
        for compiled in live:
            compiled.reweigh(override)

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
            self._rules.setdefault(key, weakref.WeakSet()).add(compiled)
            override = self._overrides.get(key)
        if override is not None:
            compiled.reweigh(override)


ROUTE_WEIGHTS = RouteWeights()
