"""A process's budget for response bytes held for HTTP/2 clients that cannot take them yet.

Each HTTP/2 connection holds response bytes beyond its client's flow-control windows, bounded
per stream and per connection (``H2Limits``); this bounds their sum over the process. While it
is spent, streams that would have to buffer stop reading their upstreams; connections that
paused a stream for it are called back once bytes are released below the cap.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["BufferBudget"]


class BufferBudget:
    """Bytes held against one cap, and who waits for room."""

    __slots__ = ("_waiting", "limit", "used")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"buffer budget: expected a positive number of bytes, got {limit}")
        self.limit = limit
        self.used = 0
        self._waiting: dict[object, Callable[[], None]] = {}

    @property
    def spent(self) -> bool:
        """True while the held bytes reach the cap."""
        return self.used >= self.limit

    def change(self, size: int) -> None:
        """``size`` bytes more are held (fewer when negative); wake the waiters on room."""
        was_spent = self.used >= self.limit
        self.used += size
        if was_spent and self.used < self.limit and self._waiting:
            waiting, self._waiting = self._waiting, {}
            for wake in waiting.values():
                wake()

    def wait(self, key: object, wake: Callable[[], None]) -> None:
        """Call ``wake()`` once the budget has room again (once per ``key``)."""
        self._waiting[key] = wake

    def forget(self, key: object) -> None:
        """``key`` no longer waits (its connection is gone)."""
        self._waiting.pop(key, None)
