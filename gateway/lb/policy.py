"""The load-balancing policy a backend is compiled with, and the balancer interface."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint, Outcome, ProxyRequest


@dataclass(frozen=True, slots=True)
class LbPolicy:
    """How to spread requests over endpoints.

    ``kind``: "LeastRequest" (power of two choices, the default), "RoundRobin", "Random" or
    "ConsistentHash".
    ``hash_on`` (ConsistentHash only): "header:<name>", "cookie:<name>" or "source-ip".
    """

    kind: str = "LeastRequest"
    hash_on: str | None = None


class Balancer(Protocol):
    """Picks an endpoint per request and learns from each try's outcome (its load, passive
    health); the same calls as a Backend's ``pick`` and ``done``."""

    def pick(self, request: ProxyRequest, tried: tuple[Endpoint, ...] = ()) -> Endpoint | None: ...

    def release(self, endpoint: Endpoint, outcome: Outcome) -> None: ...
