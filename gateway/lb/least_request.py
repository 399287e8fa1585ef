"""Least request by the power of two choices: the less loaded of two random endpoints."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from gateway.lb.balancer import BaseBalancer

if TYPE_CHECKING:
    from gateway.request import RequestHead


class LeastRequestBalancer(BaseBalancer):
    """Samples two distinct endpoints and keeps the one with fewer requests in flight."""

    __slots__ = ()

    def _choose(self, head: RequestHead, candidates: list[int] | None) -> int:
        count = len(self.endpoints) if candidates is None else len(candidates)
        if count == 1:
            return 0 if candidates is None else candidates[0]
        a, b = random.sample(range(count), 2)
        if candidates is not None:
            a, b = candidates[a], candidates[b]
        stats = self._stats
        return a if stats[a].in_flight <= stats[b].in_flight else b
