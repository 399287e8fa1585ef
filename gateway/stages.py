"""Pre-route stages: policies attached to a Gateway (or one listener) that run before routing.

A pre-route stage sees the request head, and the body when it asks for it (``needs_body``), after
the head is parsed and before route matching. It may edit the head (matching then sees its
headers: body-based routing copies the JSON body's ``model`` into ``X-Gateway-Model-Name``), may
replace the body, or may answer the request itself.

Stages come from policy objects of a registered *stage kind* (``register_stage_kind``), attached
Gateway-API style through ``spec.targetRefs`` (``gateway.compile.policies``). Compile puts the
stages of each listener port in a :class:`PortStages`; the data path asks it for the stages of a
request's host.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from gateway.backends.base import ResolveContext
from gateway.request import DirectResponse, RequestHead
from gateway.routing.hosts import HostTable, host_key


class StageRequest(Protocol):
    """What a stage gets: the request head (edit it in place) and the body, if it asked."""

    head: RequestHead
    body: bytes | None  # None when no stage of the port asked for the body


class PreRouteStage(Protocol):
    """One compiled pre-route policy."""

    @property
    def needs_body(self) -> bool:
        """True when the stage reads the request body (the data path buffers it, capped)."""
        ...

    def apply(self, request: StageRequest) -> DirectResponse | None:
        """Edit ``request.head`` (through ``set_header`` and friends) or ``request.body``;
        return a response to answer the request without routing it."""
        ...


# The raw policy object (a dict as in the YAML) and the configuration being compiled. A factory
# raises ValueError (pydantic's ValidationError is one) for a policy it cannot build; the message
# becomes the policy's Accepted=False (Invalid) condition.
StageFactory = Callable[[Mapping[str, Any], ResolveContext], PreRouteStage]

_KINDS: dict[tuple[str, str], StageFactory] = {}


def register_stage_kind(group: str, kind: str, factory: StageFactory) -> None:
    """Teach compile a pre-route policy kind; raises ValueError if it is already registered.

    Kinds run in the order they were registered (see ``gateway.compile.policies``).
    """
    if (group, kind) in _KINDS:
        raise ValueError(f"stage kind {group or 'core'}/{kind} is already registered")
    _KINDS[(group, kind)] = factory


def stage_kinds() -> list[tuple[str, str, StageFactory]]:
    """(group, kind, factory) of every registered stage kind, in registration order."""
    return [(group, kind, factory) for (group, kind), factory in _KINDS.items()]


Stages = tuple[PreRouteStage, ...]
_NONE: Stages = ()


@dataclass(frozen=True, slots=True)
class PortStages:
    """The pre-route stages of one listener port, chosen per request by host.

    The listener is chosen as the router chooses it: exact hostname, then the most specific
    wildcard, then the listener without a hostname; a host no listener serves gets no stages.
    When every listener of the port has the same stages (one listener, most often) they are
    returned without a lookup.
    """

    listeners: HostTable[Stages]
    needs_body: bool = False
    uniform: Stages | None = None

    @classmethod
    def of(cls, listeners: Sequence[tuple[str | None, Stages]]) -> PortStages:
        """From (listener hostname, stages) of every served listener of the port."""
        exact: dict[str, Stages] = {}
        wildcard: dict[str, Stages] = {}
        catch_all: Stages | None = None
        for hostname, stages in listeners:
            kind, name = host_key(hostname)
            if kind == "exact":
                exact[name] = stages
            elif kind == "wildcard":
                wildcard[name] = stages
            else:
                catch_all = stages
        distinct = {tuple(map(id, stages)) for _, stages in listeners}
        # One stage set for all listeners, and a catch-all so that no host falls through.
        uniform = listeners[0][1] if len(distinct) == 1 and catch_all is not None else None
        return cls(
            HostTable.of(exact, wildcard, catch_all),
            needs_body=any(s.needs_body for _, stages in listeners for s in stages),
            uniform=uniform,
        )

    def for_host(self, host: str) -> Stages:
        """The stages for a request's host (lower case, no port, as ``RequestHead.host``)."""
        uniform = self.uniform
        if uniform is not None:
            return uniform
        return self.listeners.best(host) or _NONE
