"""Hot reload: watch the config files, compile a new snapshot, swap it in atomically.

A file whose mtime, size or inode changed (editors and Kubernetes ConfigMaps replace files rather
than rewrite them) or a SIGHUP triggers a reload. The new configuration is loaded and compiled off
the event loop; if it is invalid, the error is logged with the file, object and field path and the
old snapshot keeps serving. Requests in flight keep the snapshot they started with.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Sequence

from gateway.compile import compile_snapshot
from gateway.config import ConfigError, load_files
from gateway.snapshot import Snapshot, SnapshotHolder

log = logging.getLogger("gateway.reload")

FileStamp = tuple[int, int, int] | None


def _stamp(path: str) -> FileStamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def report_statuses(snapshot: Snapshot, reason: str) -> None:
    """Log a WARNING per object and parent not fully accepted (each failing condition's reason
    and message), then one line: how many objects are accepted and how many are not."""
    invalid = 0
    for status in snapshot.statuses:
        if status.valid:
            continue
        invalid += 1
        for parent in status.parents:
            failing = [
                f"{c.type}={c.status} {c.reason}" + (f": {c.message}" if c.message else "")
                for c in parent.conditions
                if c.type in ("Accepted", "ResolvedRefs") and c.status != "True"
            ]
            if failing:
                log.warning(
                    "%s %s/%s (parent %s): %s",
                    status.kind,
                    status.namespace,
                    status.name,
                    parent.parent,
                    "; ".join(failing),
                )
    log.log(
        logging.WARNING if invalid else logging.INFO,
        "config version %d (%s): %d accepted, %d invalid",
        snapshot.version,
        reason,
        len(snapshot.statuses) - invalid,
        invalid,
    )


def build_snapshot(paths: Sequence[str], version: int) -> Snapshot:
    """Load and compile the files; raises ConfigError naming the file, object and field."""
    return compile_snapshot(load_files(list(paths)), version=version)


class ConfigReloader:
    """Owns the snapshot holder for one process and keeps it in step with the files."""

    def __init__(
        self,
        paths: Sequence[str],
        holder: SnapshotHolder,
        on_swap: Callable[[Snapshot], Awaitable[None]] | None = None,
        before_swap: Callable[[Snapshot], Awaitable[None]] | None = None,
        report: bool = True,
    ) -> None:
        self.paths = list(paths)
        self.report = report  # log each loaded version's invalid objects (one process of N)
        self.holder = holder
        self.on_swap = on_swap
        # Awaited with the new snapshot before it becomes current (responder lifespan startup).
        self.before_swap = before_swap
        self.reloads = 0
        self.failures = 0
        self.last_error: str | None = None
        self._stamps = [_stamp(p) for p in self.paths]
        self._lock = asyncio.Lock()

    async def reload(self, reason: str, build: Callable[[int], Snapshot] | None = None) -> bool:
        """Compile the files (or call ``build`` with the new version: cluster mode) now; swap on
        success, keep the old snapshot on failure."""
        async with self._lock:
            self._stamps = [_stamp(p) for p in self.paths]
            version = self.holder.current.version + 1
            try:
                if build is None:
                    snapshot = await asyncio.to_thread(build_snapshot, self.paths, version)
                else:
                    snapshot = await asyncio.to_thread(build, version)
            except ConfigError as exc:
                self.failures += 1
                self.last_error = str(exc)
                log.error(
                    "config rejected (%s), still serving version %d: %s",
                    reason,
                    self.holder.current.version,
                    exc,
                )
                return False
            except Exception as exc:  # a compile bug must not take the gateway down
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("config rejected (%s): internal error while compiling", reason)
                return False
            if self.before_swap is not None:
                await self.before_swap(snapshot)
            self.holder.current = snapshot
            self.reloads += 1
            self.last_error = None
            log.info("config version %d loaded (%s)", snapshot.version, reason)
            if self.report:
                report_statuses(snapshot, reason)
            if self.on_swap is not None:
                await self.on_swap(snapshot)
            return True

    def changed(self) -> bool:
        """True when any watched file differs from when it was last read."""
        return any(_stamp(p) != s for p, s in zip(self.paths, self._stamps, strict=True))

    async def watch(self, interval: float = 0.5) -> None:
        """Poll the files forever, reloading when one changes."""
        while True:
            await asyncio.sleep(interval)
            if self.changed():
                # Let a writer finish: reload once the file has been stable for one interval.
                stamps = [_stamp(p) for p in self.paths]
                await asyncio.sleep(min(interval, 0.2))
                if stamps != [_stamp(p) for p in self.paths]:
                    continue
                await self.reload("file changed")
