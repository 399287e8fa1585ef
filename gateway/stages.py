"""Pre-route stages: run after the request head (and body, when asked) and before matching."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.request import DirectResponse, RequestHead


class StageRequest(Protocol):
    """What a pre-route stage sees: the head it may edit, the body it may replace."""

    head: RequestHead
    body: bytes | None


class PreRouteStage(Protocol):
    """A stage attached to a Gateway or a listener; may set headers that matching then sees."""

    needs_body: bool

    def apply(self, request: StageRequest) -> DirectResponse | None: ...


@dataclass(frozen=True, slots=True)
class PortStages:
    """The pre-route stages of one listener port, by the listener a request's host selects."""

    default: tuple[PreRouteStage, ...] = ()
    by_host: dict[str, tuple[PreRouteStage, ...]] = field(default_factory=dict)

    def for_host(self, host: str) -> tuple[PreRouteStage, ...]:
        """The stages for a request to ``host``."""
        return self.by_host.get(host, self.default) if self.by_host else self.default
