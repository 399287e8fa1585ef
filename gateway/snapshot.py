"""The compiled runtime snapshot: the only thing the data path reads.

Everything here is built once per configuration change by ``gateway.compile`` and is immutable
(load balancers inside backends keep their own mutable counters). The data path holds a reference
to the snapshot it started a request with, so a reload never changes a request in flight.
"""

from __future__ import annotations

import itertools
import math
import random
import ssl
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from gateway.backends.base import Backend, ProxyRequest
from gateway.request import DirectResponse, RequestHead

if TYPE_CHECKING:
    from gateway.compile.gamma import MeshTable
    from gateway.stages import PortStages
    from gateway.taps import ResponseTap


class RequestFilter(Protocol):
    """Edits a request head in place, or answers the request itself by returning a response."""

    def apply(self, head: RequestHead) -> DirectResponse | None: ...


class ResponseFilter(Protocol):
    """Edits a response's status line headers in place before they reach the client."""

    def apply(self, head: RequestHead, status: int, headers: list[tuple[str, str]]) -> None: ...


class BodyFilter(Protocol):
    """Runs once the whole request body is here (``request.body``, which it may replace)."""

    def apply(self, request: ProxyRequest) -> DirectResponse | None: ...


# Makes the per-request response tap of a filter or backend (None: not this request).
TapFactory = Callable[[ProxyRequest], "ResponseTap | None"]


@dataclass(frozen=True, slots=True)
class RouteRef:
    """Which route rule a request matched: for status, metrics and logs."""

    kind: str
    namespace: str
    name: str
    rule_index: int
    rule_name: str | None = None


@dataclass(frozen=True, slots=True)
class Mirror:
    """Copy the request to ``backend`` for ``fraction`` of requests; its response is ignored."""

    backend: Backend
    fraction: float = 1.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds; None means no limit (LLM streams last minutes)."""

    request: float | None = None
    backend_request: float | None = None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """HTTPRoute retry: ``attempts`` retries after the first try, on ``codes``, connect errors."""

    attempts: int
    codes: frozenset[int] = frozenset()
    backoff: float = 0.0


@dataclass(frozen=True, slots=True)
class SessionAffinity:
    """HTTPRoute sessionPersistence mapped onto consistent hashing: on a cookie or a header."""

    type: str  # "Cookie" | "Header"
    name: str
    path: str = "/"
    max_age: int | None = None  # seconds, for Permanent cookies


@dataclass(frozen=True, slots=True)
class BackendChoice:
    """One weighted backendRef of a rule; ``backend`` is None when the ref is invalid (500).

    What the backend declares (see :class:`gateway.backends.base.Backend`) is read once, here:
    ``needs_body`` (it, or a body filter, reads the whole body first), ``max_body`` (its own
    cap), ``responder`` (an ASGI app that answers in the gateway) and its ``tap`` factory.
    """

    weight: int
    backend: Backend | None
    error: str | None = None
    name: str | None = None  # the backendRef's name: what a weight override names
    request_filters: tuple[RequestFilter, ...] = ()
    response_filters: tuple[ResponseFilter, ...] = ()
    mirrors: tuple[Mirror, ...] = ()
    body_filters: tuple[BodyFilter, ...] = ()
    taps: tuple[TapFactory, ...] = ()
    needs_body: bool = field(default=False, init=False)
    max_body: int | None = field(default=None, init=False)
    responder: Any = field(default=None, init=False)
    # Set by the rule: nothing but an endpoint to choose after routing (no body stage, mirror,
    # retry, tap or responder), the path most requests take.
    plain: bool = field(default=False, init=False, compare=False)
    # Set by the rule: no response filter, session cookie or tap looks at the response head, so
    # an HTTP/1.1 upstream's head may reach an HTTP/1.1 client as it came.
    verbatim: bool = field(default=False, init=False, compare=False)
    # The taps as compiled (filters', backend's): ``taps`` may add a sampler while the rule's
    # weights are overridden (CompiledRule.reweigh).
    compiled_taps: tuple[TapFactory, ...] = field(default=(), init=False, compare=False)

    def __post_init__(self) -> None:
        backend = self.backend
        if backend is None:
            return
        needs = bool(getattr(backend, "needs_body", False)) or bool(self.body_filters)
        object.__setattr__(self, "needs_body", needs)
        object.__setattr__(self, "max_body", getattr(backend, "max_body", None))
        object.__setattr__(self, "responder", getattr(backend, "responder", None))
        tap = getattr(backend, "tap", None)
        if tap is not None:
            object.__setattr__(self, "taps", (*self.taps, tap))
        object.__setattr__(self, "compiled_taps", self.taps)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class CompiledRule:
    """A route rule ready for the data path: filters, weighted backends, timeouts and retries.

    Its weights are the backendRefs' unless a plugin overrides them at run time
    (:meth:`reweigh`, through ``gateway.route_weights``); ``override`` is then the weights in force.
    """

    ref: RouteRef
    choices: tuple[BackendChoice, ...] = ()
    request_filters: tuple[RequestFilter, ...] = ()
    response_filters: tuple[ResponseFilter, ...] = ()
    mirrors: tuple[Mirror, ...] = ()
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy | None = None
    affinity: SessionAffinity | None = None
    body_filters: tuple[BodyFilter, ...] = ()
    taps: tuple[TapFactory, ...] = ()
    # Request filters or session persistence edit the head (set in __post_init__).
    edits_head: bool = field(default=False, init=False, repr=False, compare=False)
    _cumulative: tuple[int, ...] = field(default=(), repr=False, compare=False)
    _sequence: tuple[int, ...] = field(default=(), repr=False, compare=False)
    _turn: Iterator[int] = field(default_factory=itertools.count, repr=False, compare=False)
    override: tuple[int, ...] | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "edits_head", bool(self.request_filters) or self.affinity is not None
        )
        self._flag()
        self._weigh([max(choice.weight, 0) for choice in self.choices])

    def _flag(self) -> None:
        extras = bool(self.mirrors or self.retry or self.body_filters or self.taps)
        for choice in self.choices:
            plain = not (
                extras
                or choice.mirrors
                or choice.needs_body
                or choice.taps
                or choice.responder is not None
            )
            object.__setattr__(choice, "plain", plain)
            verbatim = not (
                self.response_filters
                or choice.response_filters
                or self.taps
                or choice.taps
                or self.affinity is not None
            )
            object.__setattr__(choice, "verbatim", verbatim)

    def _weigh(self, weights: list[int]) -> None:
        running, cumulative = 0, []
        for weight in weights:
            running += weight
            cumulative.append(running)
        object.__setattr__(self, "_cumulative", tuple(cumulative))
        object.__setattr__(self, "_sequence", smooth_weighted_sequence(weights))

    def reweigh(self, weights: Mapping[str, int] | None, sampler: TapFactory | None = None) -> None:
        """Choose by ``weights`` (backendRef name -> weight; a ref not named gets 0) from the
        next request on, ``sampler`` tapping the backendRefs whose backend has no tap of its
        own; None restores the backendRefs' own weights and taps. Requests that already chose
        keep their choice."""
        for choice in self.choices:
            taps = choice.compiled_taps
            backend = choice.backend
            if weights is not None and sampler is not None and backend is not None:
                taps = taps if getattr(backend, "tap", None) is not None else (*taps, sampler)
            object.__setattr__(choice, "taps", taps)
        self._flag()
        if weights is None:
            object.__setattr__(self, "override", None)
            self._weigh([max(choice.weight, 0) for choice in self.choices])
            return
        applied = [max(weights.get(choice.name or "", 0), 0) for choice in self.choices]
        object.__setattr__(self, "override", tuple(applied))
        self._weigh(applied)

    def choose(self, rng: random.Random | None = None) -> BackendChoice | None:
        """A backendRef by weight (share = weight / sum); None when none or every weight is 0.

        Without ``rng`` the choice follows the rule's smooth weighted round-robin cycle (exact
        shares); with ``rng`` (session affinity seeds one per session) it is a weighted draw.
        """
        cumulative = self._cumulative
        if not cumulative or cumulative[-1] == 0:
            return None
        if len(cumulative) == 1:
            return self.choices[0]
        sequence = self._sequence
        if rng is None and sequence:
            return self.choices[sequence[next(self._turn) % len(sequence)]]
        point = (rng or random).random() * cumulative[-1]
        return self.choices[bisect_right(cumulative, point)]


_MAX_SEQUENCE = 4096


def smooth_weighted_sequence(weights: list[int]) -> tuple[int, ...]:
    """One cycle of smooth weighted round robin over ``weights`` (reduced by their gcd).

    Every window of the cycle holds each index in proportion to its weight, interleaved rather
    than in runs (70/30 gives 0,1,0,0,1,0,0,1,0,0 ...), so a split is exact over a handful of
    requests instead of only on average. Empty when the cycle would exceed 4096 entries; callers
    then draw at random by weight.
    """
    divisor = math.gcd(*weights) if any(weights) else 0
    if divisor == 0:
        return ()
    reduced = [w // divisor for w in weights]
    total = sum(reduced)
    if total > _MAX_SEQUENCE:
        return ()
    current = [0] * len(reduced)
    sequence = []
    for _ in range(total):
        for i, weight in enumerate(reduced):
            current[i] += weight
        best = max(range(len(current)), key=current.__getitem__)
        current[best] -= total
        sequence.append(best)
    return tuple(sequence)


class PortRouter(Protocol):
    """Matches requests that arrived on one listener port against every route attached there."""

    def match(self, head: RequestHead) -> CompiledRule | None:
        """The winning rule under the spec's precedence, or None (the data path answers 404)."""
        ...


@dataclass(frozen=True, slots=True)
class ListenerInfo:
    """A Gateway listener the server must bind."""

    gateway_namespace: str
    gateway_name: str
    name: str
    port: int
    protocol: str
    hostname: str | None

    @property
    def scheme(self) -> str:
        """The URL scheme requests on this listener arrive with: ``https`` for HTTPS listeners."""
        return "https" if self.protocol == "HTTPS" else "http"


@dataclass(frozen=True, slots=True)
class Condition:
    """A status condition as Kubernetes writes it."""

    type: str
    status: str  # "True" | "False" | "Unknown"
    reason: str
    message: str = ""


@dataclass(frozen=True, slots=True)
class ParentStatus:
    """A route's conditions for one parentRef."""

    parent: str  # "namespace/name" or "namespace/name/sectionName"
    conditions: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class RouteStatus:
    """The status a controller would write on a route: one entry per parentRef."""

    kind: str
    namespace: str
    name: str
    parents: tuple[ParentStatus, ...]

    @property
    def valid(self) -> bool:
        """True when every parent accepted the route and every reference resolved."""
        return all(
            c.status == "True"
            for p in self.parents
            for c in p.conditions
            if c.type in ("Accepted", "ResolvedRefs")
        )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One compiled configuration: listeners, a router per port, route statuses, a JSON dump.

    ``tls`` holds a server context per HTTPS port (certificate chosen by SNI, ALPN h2 and
    http/1.1); ``port_protocols`` says, per served port, ``"HTTP"`` or ``"HTTPS"``;
    ``pre_route`` holds the pre-route stages of each port that has any (``gateway.stages``), to
    run before ``routers[port].match``.
    """

    version: int
    listeners: tuple[ListenerInfo, ...]
    routers: Mapping[int, PortRouter]
    statuses: tuple[RouteStatus, ...] = ()
    dump: Mapping[str, Any] = field(default_factory=dict)
    tls: Mapping[int, ssl.SSLContext] = field(default_factory=dict)
    port_protocols: Mapping[int, str] = field(default_factory=dict)
    # Pre-route stages per listener port (policies attached to a Gateway or listener).
    pre_route: Mapping[int, PortStages] = field(default_factory=dict)
    # The ASGI apps of in-gateway responders, for their lifespan (started before this snapshot
    # serves, shut down once no snapshot holds them).
    responders: tuple[Any, ...] = ()
    # Waypoint mode: the mesh and the destinations this configuration's waypoints serve (their
    # routers and authorization stages are in ``routers`` and ``pre_route`` under their keys).
    mesh: MeshTable | None = None

    def scheme_of(self, port: int) -> str:
        """``https`` for a TLS port, else ``http`` (what RequestHead.scheme should say)."""
        return "https" if port in self.tls else "http"


class SnapshotHolder:
    """Holds the current snapshot; a swap is one attribute store: no reader sees half a config."""

    __slots__ = ("current",)

    def __init__(self, snapshot: Snapshot) -> None:
        self.current = snapshot
