"""The backend seam: the protocol every backend kind implements and the registry of kinds.

A backendRef names ``group``/``kind``/``name``. Compile looks the pair (group, kind) up in the
registry and calls its factory; the factory returns a :class:`Backend` or raises
:class:`BackendResolveError` with one of the spec's ResolvedRefs reasons. Core Services are one
registered kind; the inference extension's InferencePool and the agent gateway's backends register
theirs the same way (``register_backend_kind``) before a config is compiled.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydantic import BaseModel

    from gateway.request import RequestHead
    from gateway.snapshot import BackendChoice, CompiledRule
    from gateway.tls.upstream import UpstreamTls


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One address the data path connects to; also the key of its upstream connection pool."""

    address: str
    port: int
    protocol: str = "http/1.1"  # "http/1.1" | "h2c" | "h2" (HTTP/2 over TLS)
    tls: UpstreamTls | None = None  # None: cleartext

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Destination:
    """Who a backend is, for Istio's destination_* metric labels and traces."""

    service_name: str
    namespace: str
    host: str  # e.g. "echo.default.svc.cluster.local"
    kind: str = "Service"


class ProxyRequest(Protocol):
    """What stages and backends see of a request while it is routed and an endpoint is chosen."""

    head: RequestHead
    # The whole request body, once a stage or the backend asked for it (see ``needs_body``);
    # None otherwise. A stage, or the backend's ``pick``, may replace it: the upstream then gets
    # the new bytes with a Content-Length of their own.
    body: bytes | None
    request_id: str
    # The route rule it matched and the backendRef chosen there (set before any pick or tap):
    # who serves it, e.g. for per-backendRef measurements of a rule whose weights are driven.
    rule: CompiledRule | None
    choice: BackendChoice | None

    def annotate(self, key: str, value: str | int | float | bool) -> None:
        """Add an attribute to the request's span and access-log line (e.g.
        ``gen_ai.request.model``)."""
        ...


@dataclass(slots=True)
class Pick:
    """A picked endpoint plus what the backend wants back in the try's :class:`Outcome`."""

    endpoint: Endpoint
    state: Any = None


PickResult = Endpoint | Pick | None


class PickRefused(Exception):
    """Raised by ``pick`` (or its awaitable) to answer the request instead of choosing: a
    sheddable request while the pool is saturated (429), a request that waited too long for
    capacity (503), an external picker's own answer. The client gets ``status`` and ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Outcome(Protocol):
    """How one try at an endpoint ended, as its backend learns it in :meth:`Backend.done`.

    Times are seconds. ``first_byte`` is from the try's start to the response head (negative
    when no head arrived); ``duration`` from the try's start to its end.
    """

    status: int  # the upstream's status; 0 when no response head arrived
    ok: bool  # False when the endpoint failed: connect error, reset, bad response, 5xx, timeout
    aborted: bool  # the client left, or the response was cut, before its end
    state: Any  # what ``pick`` returned in ``Pick.state`` (None for a bare Endpoint)
    failure: str  # why the try failed, e.g. "connect_refused", "tls_verify" ("" when it did not)

    @property
    def request_bytes(self) -> int:
        """Body bytes received from the client, when ``done`` is called."""
        ...

    @property
    def response_bytes(self) -> int:
        """Body bytes sent to the client, when ``done`` is called."""
        ...

    @property
    def first_byte(self) -> float:
        """Seconds from the try's start to its response head (negative when none arrived)."""
        ...

    @property
    def duration(self) -> float:
        """Seconds from the try's start to its end."""
        ...


class Backend(Protocol):
    """What the data path needs from any backend kind.

    ``pick`` may be a coroutine function (an endpoint picker that asks a remote service or waits
    for capacity): the data path awaits it and cancels it when the client leaves, the stream is
    reset, a timeout fires or the listener drains. Optional attributes, read once at compile:

    ``needs_body: bool``
        the request body is read to its end (up to the gateway's cap, else 413) before ``pick``,
        and is on ``request.body``;
    ``max_body: int``
        a cap of this backend's own instead of the gateway's;
    ``responder``
        an ASGI 3 application that answers the request in the gateway instead of an endpoint
        (then ``pick`` is never called);
    ``tap(request) -> ResponseTap | None``
        a per-request observer of the response (see :mod:`gateway.taps`).
    """

    destination: Destination

    def pick(
        self, request: ProxyRequest, tried: tuple[Endpoint, ...]
    ) -> PickResult | Awaitable[PickResult]:
        """An endpoint for this request, avoiding ``tried`` if it can; None when none is ready."""
        ...

    def done(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """A try at ``endpoint`` ended (each try of a retried request, the last one included)."""
        ...

    def describe(self) -> Mapping[str, Any]:
        """A JSON-able view for /config_dump."""
        ...


class BackendResolveError(Exception):
    """A backendRef that cannot be resolved; ``reason`` is a spec ResolvedRefs reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        # InvalidKind | BackendNotFound | RefNotPermitted | UnsupportedProtocol
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class BackendRef:
    """A backendRef (or mirror backendRef) after defaults: group "" and kind Service by default."""

    group: str
    kind: str
    name: str
    namespace: str
    port: int | None = None


class ResolveContext(Protocol):
    """What a backend factory may ask of the configuration being compiled."""

    def find(
        self, api_group: str, kind: str, namespace: str, name: str
    ) -> Mapping[str, Any] | None:
        """The raw resource (a dict as in the YAML), or None."""
        ...

    def list(
        self, api_group: str, kind: str, namespace: str | None = None
    ) -> list[Mapping[str, Any]]:
        """Every raw resource of a kind, optionally within one namespace."""
        ...

    def typed(self, api_group: str, kind: str, namespace: str, name: str) -> BaseModel | None:
        """The validated model of a kind validated at load (core or plugin-registered), or None.

        Objects of such kinds are reachable through ``find``/``list`` too; ``typed`` saves the
        factory from validating the raw dict again.
        """
        ...


BackendFactory = Callable[[BackendRef, ResolveContext], Backend]

_KINDS: dict[tuple[str, str], BackendFactory] = {}


def register_backend_kind(group: str, kind: str, factory: BackendFactory) -> None:
    """Teach compile a new backendRef kind; a later registration of the same pair replaces it."""
    _KINDS[(group, kind)] = factory


def resolve_backend(ref: BackendRef, ctx: ResolveContext) -> Backend:
    """Build the backend for a ref, or raise BackendResolveError (InvalidKind if unknown)."""
    factory = _KINDS.get((ref.group, ref.kind))
    if factory is None:
        group = ref.group or "core"
        raise BackendResolveError(
            "InvalidKind", f"backendRef kind {ref.kind!r} in group {group!r} is not supported"
        )
    return factory(ref, ctx)


def registered_kinds() -> list[tuple[str, str]]:
    """The (group, kind) pairs compile can resolve."""
    return sorted(_KINDS)
