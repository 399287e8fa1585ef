"""Per-caller budgets of tool calls: calls per minute and calls at once.

A caller is the token's subject, else the ``x-agent-id`` header, else the peer address. Counts
are kept per serving process (with ``--workers N`` each worker allows the budget) and start
over when the configuration reloads. A call over either budget is refused with 429 and a
``Retry-After`` in whole seconds.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

_WINDOW = 60.0
_KEPT = 65_536  # callers remembered; the idle ones go first


@dataclass(slots=True)
class _Caller:
    calls: deque[float] = field(default_factory=deque)  # start times within the window
    active: int = 0


@dataclass(slots=True)
class CallBudgets:
    """One MCPBackend's tool-call budgets and every caller's use of them."""

    per_minute: int | None
    concurrent: int | None
    clock: Callable[[], float] = time.monotonic
    callers: dict[str, _Caller] = field(default_factory=dict)

    def admit(self, caller: str) -> float | None:
        """None when ``caller`` may call now (the call is counted), else seconds to wait."""
        now = self.clock()
        seen = self.callers.pop(caller, None) or _Caller()
        self.callers[caller] = seen  # most recent last
        if len(self.callers) > _KEPT:
            oldest = next(iter(self.callers))
            if self.callers[oldest].active == 0:
                del self.callers[oldest]
        while seen.calls and seen.calls[0] <= now - _WINDOW:
            seen.calls.popleft()
        if self.concurrent is not None and seen.active >= self.concurrent:
            return 1.0
        if self.per_minute is not None and len(seen.calls) >= self.per_minute:
            return seen.calls[0] + _WINDOW - now
        seen.calls.append(now)
        seen.active += 1
        return None

    def done(self, caller: str) -> None:
        """A call admitted for ``caller`` ended."""
        seen = self.callers.get(caller)
        if seen is not None and seen.active > 0:
            seen.active -= 1


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
