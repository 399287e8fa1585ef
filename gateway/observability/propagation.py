"""W3C trace context without recording: what the data path propagates when nothing observes it
(``NoopTelemetry``), and the continuation of an incoming ``traceparent``."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.observability.record import RequestRecord
    from gateway.request import RequestHead

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32


def continue_traceparent(incoming: str | None) -> str:
    """The upstream hop's traceparent: the incoming trace with a fresh span id, or a new trace."""
    span = f"{random.getrandbits(64) | 1:016x}"
    if incoming is not None and len(incoming) >= 55:
        parts = incoming.strip().lower().split("-")
        if (
            len(parts) >= 4
            and parts[0] != "ff"
            and len(parts[0]) == 2
            and len(parts[1]) == 32
            and len(parts[2]) == 16
            and len(parts[3]) == 2
            and parts[1] != _ZERO_TRACE
            and _HEX.issuperset(parts[0] + parts[1] + parts[2] + parts[3])
        ):
            return f"00-{parts[1]}-{span}-{parts[3]}"
    return f"00-{random.getrandbits(128) | 1:032x}-{span}-00"


class NoopTrace:
    """The per-request trace context of :class:`NoopTelemetry`."""

    __slots__ = ("traceparent",)

    def __init__(self, traceparent: str) -> None:
        self.traceparent = traceparent


class NoopTelemetry:
    """Implements the Telemetry protocol with nothing recorded."""

    def start(self, head: RequestHead) -> NoopTrace:
        """Continue the incoming trace (or start one) so upstreams still see a traceparent."""
        return NoopTrace(continue_traceparent(head.get("traceparent")))

    def finish(self, trace: NoopTrace, record: RequestRecord) -> None:
        """Nothing to record."""
