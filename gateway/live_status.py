"""Statuses plugins publish while they run, for the configuration source to record.

Compile-time statuses (a route's ``parents[]``) are the snapshot's. Some state only a running
plugin knows: a rollout's phase and step move with its analysis, not with a compile. The admin
process's plugins publish such a status per object (``AdminContext.statuses``); in cluster mode
the Lease holder writes it through the status subresource (skipped when unchanged, retried on
409), in file mode nobody records it. ``recorded`` reads the status the source holds, so a
restarted plugin can resume from it; ``leads`` says whether this process's statuses are the
ones recorded (file mode: yes; in a cluster: the leader's), so a replica that does not lead can
follow the recorded ones instead of deciding on its own.

A published status is plain JSON data in the kind's status shape. Its ``conditions`` give
``type``, ``status``, ``reason`` and ``message``; the writer adds ``lastTransitionTime`` (kept
while a condition's status holds) and ``observedGeneration``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Status = dict[str, Any]


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """The object a status is for."""

    group: str
    kind: str
    namespace: str
    name: str

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"


def _nothing_recorded(ref: ObjectRef) -> Status | None:
    return None


def _alone() -> bool:
    return True


class LiveStatuses:
    """The latest status published per object; the source that records them listens."""

    def __init__(self) -> None:
        self._statuses: dict[ObjectRef, Status] = {}
        self._listeners: list[Callable[[], None]] = []
        self._recorded: Callable[[ObjectRef], Status | None] = _nothing_recorded
        self._leads: Callable[[], bool] = _alone

    def publish(self, ref: ObjectRef, status: Status) -> None:
        """Make ``status`` the object's; listeners hear of it unless it is what was published."""
        if self._statuses.get(ref) == status:
            return
        self._statuses[ref] = status
        for listener in self._listeners:
            listener()

    def forget(self, ref: ObjectRef) -> None:
        """Publish nothing more for ``ref`` (its object is gone from the configuration)."""
        self._statuses.pop(ref, None)

    def published(self) -> dict[ObjectRef, Status]:
        """Every object's latest published status."""
        return dict(self._statuses)

    def recorded(self, ref: ObjectRef) -> Status | None:
        """The status the source holds for the object (None: none, or the source keeps none)."""
        return self._recorded(ref)

    def leads(self) -> bool:
        """Whether what this process publishes is recorded (False: follow ``recorded``)."""
        return self._leads()

    def record_with(
        self,
        recorded: Callable[[ObjectRef], Status | None],
        listener: Callable[[], None],
        leads: Callable[[], bool] = _alone,
    ) -> None:
        """Attach the source: how to read a recorded status, what to call on a publish, and
        whether this process is the one whose statuses are recorded."""
        self._recorded = recorded
        self._listeners.append(listener)
        self._leads = leads
