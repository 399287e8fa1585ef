"""Per-request load balancing across a backend's endpoints, with passive health."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.lb.consistent_hash import ConsistentHashBalancer
from gateway.lb.health import registry
from gateway.lb.least_request import LeastRequestBalancer
from gateway.lb.policy import Balancer, LbPolicy
from gateway.lb.random_choice import RandomBalancer
from gateway.lb.round_robin import RoundRobinBalancer

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint

__all__ = ["Balancer", "LbPolicy", "make_balancer", "registry"]


def make_balancer(policy: LbPolicy, endpoints: tuple[Endpoint, ...]) -> Balancer:
    """The balancer for a policy; ValueError for an unknown kind or hash key."""
    if policy.kind == "RoundRobin":
        return RoundRobinBalancer(endpoints)
    if policy.kind == "LeastRequest":
        return LeastRequestBalancer(endpoints)
    if policy.kind == "ConsistentHash":
        return ConsistentHashBalancer(endpoints, policy.hash_on or "source-ip")
    if policy.kind == "Random":
        return RandomBalancer(endpoints)
    raise ValueError(
        f"load balancer kind {policy.kind!r}: expected LeastRequest, RoundRobin, Random or "
        "ConsistentHash"
    )
