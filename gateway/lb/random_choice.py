"""Random: a uniformly random endpoint per request."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from gateway.lb.balancer import BaseBalancer

if TYPE_CHECKING:
    from gateway.request import RequestHead


class RandomBalancer(BaseBalancer):
    """Each pick draws an endpoint uniformly at random, skipping ejected and tried ones."""

    __slots__ = ()

    def _choose(self, head: RequestHead, candidates: list[int] | None) -> int:
        if candidates is None:
            return random.randrange(len(self.endpoints))
        return random.choice(candidates)
