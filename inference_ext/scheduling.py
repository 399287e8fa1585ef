"""The contract between whoever asks for an endpoint (the gateway in-process, or ``ambient epp``
over ext_proc) and the pool's scheduler that answers."""

from __future__ import annotations

from typing import Protocol

from gateway.backends.base import Endpoint, Outcome
from inference_ext.request import InferenceRequest


class SchedulingError(Exception):
    """The request gets no endpoint; ``status`` is what the client is answered."""

    status = 503

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Shed(SchedulingError):
    """A sheddable request (priority < 0) while the pool is saturated: 429."""

    status = 429


class NoCapacity(SchedulingError):
    """No ready endpoint, or the request waited in the queue past its TTL: 503."""

    status = 503


class Scheduler(Protocol):
    """One InferencePool's endpoint picker."""

    async def schedule(self, request: InferenceRequest) -> list[Endpoint]:
        """Endpoints for the request, best first (the rest are fallbacks for retries); may wait
        for capacity (flow control); raises Shed or NoCapacity."""
        ...

    def served(self, request: InferenceRequest, endpoint: Endpoint, outcome: Outcome) -> None:
        """The request's try at ``endpoint`` ended (the picker's in-flight accounting)."""
        ...
