"""Balancers: distribution, stickiness, ring stability, passive health and panic mode."""

from __future__ import annotations

from collections import Counter

import pytest

from gateway.backends.base import Endpoint
from gateway.lb import make_balancer
from gateway.lb.consistent_hash import ConsistentHashBalancer
from gateway.lb.health import EjectionPolicy, HealthRegistry
from gateway.lb.least_request import LeastRequestBalancer
from gateway.lb.policy import LbPolicy
from gateway.lb.random_choice import RandomBalancer
from gateway.lb.round_robin import RoundRobinBalancer
from gateway.request import RequestHead
from tests.fixtures.route_config import Finished, PickRequest


def _endpoints(n: int) -> tuple[Endpoint, ...]:
    return tuple(Endpoint(f"10.0.0.{i}", 8080) for i in range(n))


def _head(**headers: str) -> RequestHead:
    return RequestHead("GET", "/", "", "h", list(headers.items()), client_ip="192.0.2.1")


def _req(**headers: str) -> PickRequest:
    return PickRequest(_head(**headers))


OK, FAILED = Finished(ok=True), Finished(status=503, ok=False)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_make_balancer_kinds() -> None:
    eps = _endpoints(2)
    assert isinstance(make_balancer(LbPolicy("RoundRobin"), eps), RoundRobinBalancer)
    assert isinstance(make_balancer(LbPolicy(), eps), LeastRequestBalancer)
    assert isinstance(
        make_balancer(LbPolicy("ConsistentHash", "cookie:s"), eps), ConsistentHashBalancer
    )
    assert isinstance(make_balancer(LbPolicy("Random"), eps), RandomBalancer)
    with pytest.raises(ValueError, match="Weighted"):
        make_balancer(LbPolicy("Weighted"), eps)
    with pytest.raises(ValueError, match="hash_on"):
        make_balancer(LbPolicy("ConsistentHash", "header:"), eps)


def test_round_robin_skips_tried() -> None:
    eps = _endpoints(3)
    rr = RoundRobinBalancer(eps, HealthRegistry())
    assert [rr.pick(_req()) for _ in range(6)] == list(eps) * 2
    assert rr.pick(_req(), tried=(eps[0], eps[1])) == eps[2]
    assert rr.pick(_req(), tried=eps) in eps  # everything tried: reuse one


def test_random_spreads_over_every_endpoint_and_skips_tried() -> None:
    eps = _endpoints(4)
    rnd = RandomBalancer(eps, HealthRegistry())
    picks = Counter(rnd.pick(_req()) for _ in range(4000))
    assert set(picks) == set(eps) and min(picks.values()) > 4000 / 4 * 0.8
    assert {rnd.pick(_req(), tried=eps[:3]) for _ in range(50)} == {eps[3]}
    assert rnd.pick(_req(), tried=eps) in eps  # everything tried: reuse one


def test_least_request_prefers_fewer_in_flight() -> None:
    eps = _endpoints(2)
    lr = LeastRequestBalancer(eps, HealthRegistry())
    held = [lr.pick(_req()) for _ in range(3)]
    assert Counter(held) in (Counter({eps[0]: 2, eps[1]: 1}), Counter({eps[0]: 1, eps[1]: 2}))
    for endpoint in held:
        lr.release(endpoint, OK)
    for _ in range(5):
        lr.pick(_req())  # never released: load grows evenly
    stats = [lr.stats_of(e).in_flight for e in eps]
    assert abs(stats[0] - stats[1]) <= 1


def test_consistent_hash_sticky_and_stable_on_membership_change() -> None:
    before = ConsistentHashBalancer(_endpoints(10), "header:x-user", HealthRegistry())
    after = ConsistentHashBalancer(_endpoints(11), "header:x-user", HealthRegistry())
    keys = [f"user-{i}" for i in range(2000)]
    first = {k: before.pick(_req(**{"x-user": k})) for k in keys}
    assert all(before.pick(_req(**{"x-user": k})) == first[k] for k in keys[:100])
    moved = sum(first[k] != after.pick(_req(**{"x-user": k})) for k in keys)
    assert moved / len(keys) < 0.2  # ideal 1/11; a modulo hash would move ~90%
    spread = Counter(first.values())
    assert len(spread) == 10 and min(spread.values()) > 2000 / 10 / 2


def test_consistent_hash_cookie_and_missing_key() -> None:
    ch = ConsistentHashBalancer(_endpoints(5), "cookie:sid", HealthRegistry())
    head = _head(cookie="a=1; sid=abc; b=2")
    assert ch.key(head) == "abc"
    assert len({ch.pick(PickRequest(head)) for _ in range(20)}) == 1
    assert ch.key(_head()) is None and ch.pick(_req()) in ch.endpoints


def test_ejection_backoff_and_panic_mode() -> None:
    clock = FakeClock()
    health = HealthRegistry(EjectionPolicy(failures=3, base=10, max=25))
    health.clock = clock
    eps = _endpoints(2)
    rr = RoundRobinBalancer(eps, health)
    for _ in range(3):
        rr.release(eps[0], FAILED)
    assert health.stats(eps[0]).ejected(clock.now)
    assert {rr.pick(_req()) for _ in range(6)} == {eps[1]}
    clock.now += 10.1
    assert {rr.pick(_req()) for _ in range(6)} == set(eps)
    for _ in range(3):
        rr.release(eps[0], FAILED)
    assert health.stats(eps[0]).ejected_until == pytest.approx(clock.now + 20)
    for _ in range(6):
        rr.release(eps[0], FAILED)
    assert health.stats(eps[0]).ejected_until == pytest.approx(clock.now + 25)  # capped
    for _ in range(3):
        rr.release(eps[1], FAILED)
    # every endpoint ejected: panic mode spreads over all of them instead of failing
    assert {rr.pick(_req()) for _ in range(6)} == set(eps)


def test_success_resets_consecutive_failures() -> None:
    health = HealthRegistry(EjectionPolicy(failures=3))
    eps = _endpoints(1)
    rr = RoundRobinBalancer(eps, health)
    for ok in (False, False, True, False, False):
        rr.release(eps[0], OK if ok else FAILED)
    assert not health.stats(eps[0]).ejected(health.clock())


def test_health_survives_a_new_balancer() -> None:
    health = HealthRegistry(EjectionPolicy(failures=1))
    eps = _endpoints(2)
    RoundRobinBalancer(eps, health).release(eps[0], FAILED)
    rebuilt = RoundRobinBalancer(eps, health)  # a config reload builds new balancers
    assert {rebuilt.pick(_req()) for _ in range(4)} == {eps[1]}
