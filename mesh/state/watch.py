"""Reload mesh.yaml when it changes (mtime/size polling, robust across editors and bind mounts)."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path

from mesh.errors import ConfigError
from mesh.state.registry import MeshState, load_mesh

log = logging.getLogger(__name__)


class MeshWatcher:
    """Holds the current MeshState and swaps it on file changes; bad edits keep the old one."""

    def __init__(self, path: str | Path, trust_domain: str, interval: float = 1.0) -> None:
        self.path = Path(path)
        self.trust_domain = trust_domain
        self.interval = interval
        self.state = load_mesh(self.path, trust_domain)
        self._stamp = self._current_stamp()
        self._listeners: list[Callable[[MeshState], None]] = []
        self._task: asyncio.Task[None] | None = None

    def _current_stamp(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def subscribe(self, callback: Callable[[MeshState], None]) -> None:
        """Call ``callback(new_state)`` after every successful reload."""
        self._listeners.append(callback)

    def reload(self) -> bool:
        """Reload now; True when a new state was installed."""
        self._stamp = self._current_stamp()
        try:
            state = load_mesh(self.path, self.trust_domain)
        except ConfigError as exc:
            log.error("mesh reload failed, keeping the previous state: %s", exc)
            return False
        self.state = state
        log.info(
            "mesh reloaded: %d workloads, %d services, %d policies",
            len(state.workloads),
            len(state.services),
            len(state.policies),
        )
        for callback in self._listeners:
            callback(state)
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            if self._current_stamp() != self._stamp:
                self.reload()

    def start(self) -> None:
        """Begin polling on the running loop."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop polling."""
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
