"""HTTPRoute retry policy as tenacity stop and wait strategies.

The data path is callback-driven, so it asks the strategies for a decision instead of wrapping a
coroutine in ``AsyncRetrying``; requests without a retry stanza never touch this module.
"""

from __future__ import annotations

from functools import lru_cache

from tenacity import RetryCallState, Retrying, stop_after_attempt, wait_exponential, wait_none
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from gateway.snapshot import RetryPolicy

MAX_BACKOFF = 30.0


class RetrySchedule:
    """Stops after ``attempts`` retries; waits ``backoff`` doubling per retry (capped)."""

    __slots__ = ("_retrying", "codes", "stop", "wait")

    def __init__(self, policy: RetryPolicy) -> None:
        self.codes = policy.codes
        self.stop: stop_base = stop_after_attempt(policy.attempts + 1)
        self.wait: wait_base = (
            wait_exponential(
                multiplier=policy.backoff, min=policy.backoff, max=max(MAX_BACKOFF, policy.backoff)
            )
            if policy.backoff > 0
            else wait_none()
        )
        self._retrying = Retrying(stop=self.stop, wait=self.wait)

    def delay_after(self, tries: int) -> float | None:
        """Seconds to wait before the next try after ``tries`` tries, or None to give up."""
        state = RetryCallState(self._retrying, None, (), {})
        state.attempt_number = tries
        if self.stop(state):
            return None
        return float(self.wait(state))


@lru_cache(maxsize=256)
def schedule_for(policy: RetryPolicy) -> RetrySchedule:
    """The (cached) schedule of a compiled retry policy."""
    return RetrySchedule(policy)
