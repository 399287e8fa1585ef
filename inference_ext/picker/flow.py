"""Flow control: where requests wait, by priority, while their pool is saturated.

Higher priority first, first come first within one priority; bounded in size (beyond it: 429)
and in time (a request that waited ``ttl`` gets 503). A request whose client left is cancelled
where it waits and leaves the queue. The scheduler releases the head when capacity frees (a
request ends, a scrape shows shorter queues).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools

from inference_ext.scheduling import NoCapacity, Shed


class WaitQueue:
    """Waiting requests, best first: (-priority, arrival) order."""

    __slots__ = ("_heap", "_live", "_order")

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._live = 0  # entries still waiting (the heap also holds given-up ones until popped)

    def __len__(self) -> int:
        return self._live

    async def wait(self, priority: int, limit: int, ttl: float) -> None:
        """Wait for a release; Shed when ``limit`` requests already wait, NoCapacity after
        ``ttl`` seconds. Cancelling the caller leaves the queue."""
        if self._live >= limit:
            raise Shed(f"the pool is saturated and {limit} requests already wait")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (-priority, next(self._order), future))
        self._live += 1
        try:
            await asyncio.wait_for(asyncio.shield(future), ttl)
        except TimeoutError:
            raise NoCapacity(f"waited {ttl:g}s for a model server with capacity") from None
        finally:
            if not future.done():
                # Timed out or cancelled: its heap entry is skipped when it comes up.
                future.cancel()
                self._live -= 1
                if len(self._heap) > 2 * self._live + 64:
                    self._heap = [entry for entry in self._heap if not entry[2].done()]
                    heapq.heapify(self._heap)

    def release_one(self) -> bool:
        """Let the best waiting request go; False when none waits."""
        heap = self._heap
        while heap:
            _, _, future = heapq.heappop(heap)
            if not future.done():
                future.set_result(None)
                self._live -= 1
                return True
        return False
