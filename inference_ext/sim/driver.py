"""Runs an engine on an asyncio loop: one timer per replica, at the engine's ``wake_at``."""

from __future__ import annotations

import asyncio

from inference_ext.sim.engine import Engine, Sequence


class EngineDriver:
    """Feeds the loop's clock to an ``Engine`` and keeps exactly one timer armed for it."""

    def __init__(self, engine: Engine, loop: asyncio.AbstractEventLoop) -> None:
        self.engine = engine
        self.loop = loop
        self._timer: asyncio.TimerHandle | None = None
        self._when = 0.0

    def submit(self, seq: Sequence) -> None:
        """Queue a sequence (``ContextTooLong`` if it can never fit)."""
        self.engine.submit(seq, self.loop.time())
        self._arm()

    def abort(self, seq: Sequence) -> None:
        """Drop a sequence whose client left."""
        self.engine.abort(seq, self.loop.time())
        self._arm()

    def close(self) -> None:
        """Stop running the engine."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        wake = self.engine.wake_at
        timer = self._timer
        if timer is not None:
            if wake == self._when:
                return
            timer.cancel()
            self._timer = None
        if wake is not None:
            self._when = wake
            self._timer = self.loop.call_at(wake, self._fire)

    def _fire(self) -> None:
        self._timer = None
        # Never earlier than planned (a timer may run a clock tick early): the step's length
        # is the engine's decision; a late timer (a busy loop) makes it longer, as it really was.
        self.engine.advance(max(self.loop.time(), self._when))
        self._arm()
