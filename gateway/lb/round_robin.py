"""Round robin across the allowed endpoints."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gateway.lb.balancer import BaseBalancer

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint
    from gateway.lb.health import HealthRegistry
    from gateway.request import RequestHead


class RoundRobinBalancer(BaseBalancer):
    """Each pick takes the next endpoint in order, skipping ejected and tried ones."""

    __slots__ = ("_next",)

    def __init__(
        self, endpoints: tuple[Endpoint, ...], health: HealthRegistry | None = None
    ) -> None:
        super().__init__(endpoints, health)
        self._next = 0

    def _choose(self, head: RequestHead, candidates: list[int] | None) -> int:
        turn = self._next
        self._next = turn + 1
        if candidates is None:
            return turn % len(self.endpoints)
        return candidates[turn % len(candidates)]
