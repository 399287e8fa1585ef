"""Client-key budgets: requests and tokens per minute, as token buckets per serving process.

A request is admitted while both of its key's buckets hold at least one unit; its tokens (input plus
output, from the provider's usage) are charged once the answer is complete, so a bucket may go
below zero and the key waits until it refills. A refused request learns when to retry. Buckets
live in process state: they survive reloads, and with ``--workers N`` each worker keeps its own
(the budget holds per worker, not for the whole gateway).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Bucket:
    """``per_minute`` units, refilled continuously; the level may go negative (a debt)."""

    per_minute: int
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(
                float(self.per_minute), self.level + (now - self.stamp) * self.per_minute / 60.0
            )
            self.stamp = now

    def wait(self, now: float) -> float:
        """Seconds until the bucket holds a whole unit (0 when it does now)."""
        self.refill(now)
        if self.level >= 1:
            return 0.0
        return (1 - self.level) * 60.0 / self.per_minute


@dataclass(slots=True)
class Budgets:
    """The buckets of every key, by key identity and limit."""

    clock: Callable[[], float] = time.monotonic
    _buckets: dict[tuple[str, str, int], Bucket] = field(default_factory=dict)

    def _bucket(self, key: str, unit: str, per_minute: int, now: float) -> Bucket:
        found = self._buckets.get((key, unit, per_minute))
        if found is None:
            found = Bucket(per_minute, float(per_minute), now)
            self._buckets[(key, unit, per_minute)] = found
        return found

    def admit(self, key: str, requests: int | None, tokens: int | None) -> float:
        """0 and a request counted, or the seconds to wait before ``key`` may ask again."""
        now = self.clock()
        waits = [
            self._bucket(key, unit, limit, now).wait(now)
            for unit, limit in (("requests", requests), ("tokens", tokens))
            if limit is not None
        ]
        wait = max(waits, default=0.0)
        if wait == 0.0 and requests is not None:
            self._bucket(key, "requests", requests, now).level -= 1
        return wait

    def charge(self, key: str, tokens_per_minute: int | None, tokens: int) -> None:
        """Take ``tokens`` from ``key``'s token bucket (when it has one)."""
        if tokens_per_minute is not None and tokens > 0:
            now = self.clock()
            bucket = self._bucket(key, "tokens", tokens_per_minute, now)
            bucket.refill(now)
            bucket.level -= tokens
