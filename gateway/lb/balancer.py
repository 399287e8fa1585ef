"""Shared machinery of the balancers: candidate filtering, panic mode, in-flight accounting."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.lb.health import EndpointStats, HealthRegistry, registry

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint, Outcome, ProxyRequest
    from gateway.request import RequestHead


class BaseBalancer:
    """Endpoints with their shared statistics; subclasses implement :meth:`_choose`."""

    __slots__ = ("_by_id", "_health", "_index", "_stats", "endpoints")

    def __init__(
        self, endpoints: tuple[Endpoint, ...], health: HealthRegistry | None = None
    ) -> None:
        self._health = health or registry
        self.endpoints = endpoints
        self._stats = tuple(self._health.stats(e) for e in endpoints)
        self._index = {e: i for i, e in enumerate(endpoints)}
        # pick() hands out these very objects: find them by id() on release (no dataclass hash).
        self._by_id = {id(e): i for i, e in enumerate(endpoints)}

    def pick(self, request: ProxyRequest, tried: tuple[Endpoint, ...] = ()) -> Endpoint | None:
        """An endpoint for this request, avoiding ejected and already-tried ones when possible."""
        if not self.endpoints:
            return None
        health = self._health
        if not tried and health.clock() >= health.quiet_after:
            candidates = None  # nothing is ejected anywhere: every endpoint may serve
        else:
            candidates = self._candidates(tried)
        index = self._choose(request.head, candidates)
        self._stats[index].in_flight += 1
        return self.endpoints[index]

    def release(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """Account the end of a try to ``endpoint``; failures feed passive health."""
        index = self._by_id.get(id(endpoint))
        if index is None or self.endpoints[index] is not endpoint:
            index = self._index.get(endpoint)
        stats = self._stats[index] if index is not None else self._health.stats(endpoint)
        if stats.in_flight > 0:
            stats.in_flight -= 1
        if outcome.ok:
            stats.consecutive_failures = 0  # HealthRegistry.record's success path, inlined
        else:
            self._health.record(stats, False)

    def _candidates(self, tried: tuple[Endpoint, ...]) -> list[int] | None:
        """Indexes allowed for this pick; None means all (the common, healthy case)."""
        health = self._health
        now = health.clock()
        if not tried and now >= health.quiet_after:
            return None
        stats = self._stats
        healthy = [i for i, s in enumerate(stats) if not s.ejected(now)]
        # Panic mode: when every endpoint is ejected, spreading over all beats answering 503.
        pool = healthy or list(range(len(stats)))
        if tried:
            untried = [i for i in pool if self.endpoints[i] not in tried]
            if untried:
                return untried
        return pool

    def _choose(self, head: RequestHead, candidates: list[int] | None) -> int:
        raise NotImplementedError

    def stats_of(self, endpoint: Endpoint) -> EndpointStats:
        """The shared statistics of one endpoint (introspection and tests)."""
        return self._health.stats(endpoint)
