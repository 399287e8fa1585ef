"""The backend seam: the protocol every backend kind implements and the registry of kinds.

A backendRef names ``group``/``kind``/``name``. Compile looks the pair (group, kind) up in the
registry and calls its factory; the factory returns a :class:`Backend` or raises
:class:`BackendResolveError` with one of the spec's ResolvedRefs reasons. Core Services are one
registered kind; the inference extension's InferencePool and the agent gateway's backends register
theirs the same way (``register_backend_kind``) before a config is compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from gateway.request import RequestHead
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


class Backend(Protocol):
    """What the data path needs from any backend kind."""

    destination: Destination

    def pick(self, head: RequestHead, tried: tuple[Endpoint, ...] = ()) -> Endpoint | None:
        """An endpoint for this request, avoiding ``tried`` if possible; None when none is ready."""
        ...

    def release(self, endpoint: Endpoint, ok: bool) -> None:
        """The request to ``endpoint`` finished; ``ok`` False on a connect failure or a 5xx."""
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
