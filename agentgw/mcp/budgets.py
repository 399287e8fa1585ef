"""Per-caller budgets of tool calls: calls per minute and calls at once.

A caller is the token's subject, else ``apiKey:<name>``, else the mesh peer's SPIFFE id, else
the ``x-agent-id`` header, else the peer address. Calls per minute are a token bucket per
(backend, caller): ``toolCallsPerMinute`` calls at once at most, refilled at that many a minute,
in the table every serving process shares (:mod:`agentgw.buckets`), so ``--workers N`` allow the
budget once in all; it outlives configuration reloads (a changed limit is a new bucket). Calls
at once are counted per serving process: a worker that died mid-call must not hold a caller's
count forever, so with ``--workers N`` a caller may have up to N times ``concurrentToolCalls`` calls
in flight. A call over either budget is refused with 429 and a ``Retry-After`` in whole seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from agentgw.buckets import Budgets


@dataclass(slots=True)
class CallBudgets:
    """One MCPBackend's tool-call budgets and this process's calls in flight."""

    backend: str  # namespace/name: each backend's budgets are its own
    per_minute: int | None
    concurrent: int | None
    buckets: Budgets
    active: dict[str, int] = field(default_factory=dict)  # caller -> calls in flight here

    def admit(self, caller: str) -> float | None:
        """None when ``caller`` may call now (the call is counted), else seconds to wait."""
        active = self.active.get(caller, 0)
        if self.concurrent is not None and active >= self.concurrent:
            return 1.0
        if self.per_minute is not None:
            wait = self.buckets.admit(f"mcp/{self.backend}/{caller}", self.per_minute, None)
            if wait > 0:
                return wait
        self.active[caller] = active + 1
        return None

    def done(self, caller: str) -> None:
        """A call admitted for ``caller`` ended."""
        active = self.active.get(caller, 0)
        if active <= 1:
            self.active.pop(caller, None)
        else:
            self.active[caller] = active - 1


def retry_after(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
