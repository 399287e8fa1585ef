"""Passive health: per-endpoint in-flight counts, consecutive failures and ejection back-off.

State is keyed by :class:`Endpoint` in one process-wide registry, so a config reload (which builds
new balancers) keeps what was learnt about each endpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    """Eject after ``failures`` consecutive failures for ``base * 2**(ejections-1)`` s, capped."""

    failures: int = 5
    base: float = 10.0
    max: float = 300.0


class EndpointStats:
    """What the balancers know about one endpoint."""

    __slots__ = ("consecutive_failures", "ejected_until", "ejections", "in_flight")

    def __init__(self) -> None:
        self.in_flight = 0
        self.consecutive_failures = 0
        self.ejections = 0
        self.ejected_until = 0.0

    def ejected(self, now: float) -> bool:
        """True while the endpoint sits out an ejection."""
        return self.ejected_until > now


class HealthRegistry:
    """Process-wide endpoint statistics; balancers share the entries for the same endpoint."""

    __slots__ = ("_stats", "clock", "policy", "quiet_after")

    def __init__(self, policy: EjectionPolicy | None = None) -> None:
        self.policy = policy or EjectionPolicy()
        self.clock = time.monotonic
        self._stats: dict[Endpoint, EndpointStats] = {}
        # No endpoint anywhere is ejected once the clock passes this: the balancers' fast path.
        self.quiet_after = 0.0

    def stats(self, endpoint: Endpoint) -> EndpointStats:
        """The (shared) statistics entry of an endpoint, created on first use."""
        entry = self._stats.get(endpoint)
        if entry is None:
            entry = self._stats[endpoint] = EndpointStats()
        return entry

    def record(self, stats: EndpointStats, ok: bool) -> None:
        """Count an outcome; the N-th consecutive failure ejects with exponential back-off."""
        if ok:
            stats.consecutive_failures = 0
            return
        stats.consecutive_failures += 1
        policy = self.policy
        if stats.consecutive_failures >= policy.failures:
            stats.ejections += 1
            period = min(policy.base * 2 ** (stats.ejections - 1), policy.max)
            stats.ejected_until = self.clock() + period
            self.quiet_after = max(self.quiet_after, stats.ejected_until)
            stats.consecutive_failures = 0

    def clear(self) -> None:
        """Forget everything (tests)."""
        self._stats.clear()
        self.quiet_after = 0.0


registry = HealthRegistry()
