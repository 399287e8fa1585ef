"""ExtensionRef filters: the registry of filter kinds, and the 500 an unresolvable one answers.

A later issue registers a kind with ``register_filter_kind(group, kind, factory)`` before compiling;
the factory gets the reference and the ResolveContext and returns the filters to run. A reference
nobody can resolve is never skipped: requests through it are answered 500.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.backends.base import ResolveContext
from gateway.request import DirectResponse, RequestHead, error_response
from gateway.snapshot import BodyFilter, RequestFilter, ResponseFilter, TapFactory


@dataclass(frozen=True, slots=True)
class ExtensionRef:
    """An ExtensionRef filter reference; ``namespace`` is the route's."""

    group: str
    kind: str
    name: str
    namespace: str

    def __str__(self) -> str:
        return f"{self.group or 'core'}/{self.kind} {self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ExtensionFilters:
    """What a filter kind's factory returns: any of a request filter (sees the head), a body
    filter (runs once the whole request body is here: the gateway reads it first, capped), a
    response filter (edits the response head) and a tap factory (observes the response)."""

    request: RequestFilter | None = None
    response: ResponseFilter | None = None
    body: BodyFilter | None = None
    tap: TapFactory | None = None


FilterFactory = Callable[[ExtensionRef, ResolveContext], ExtensionFilters]

_KINDS: dict[tuple[str, str], FilterFactory] = {}


def register_filter_kind(group: str, kind: str, factory: FilterFactory) -> None:
    """Teach compile an ExtensionRef kind; its factory raises LookupError for a missing object."""
    _KINDS[(group, kind)] = factory


def registered_filter_kinds() -> list[tuple[str, str]]:
    """The (group, kind) pairs ExtensionRef filters can resolve."""
    return sorted(_KINDS)


class UnknownFilterKind(LookupError):
    """No filter kind is registered for the reference's group and kind."""


def resolve_extension(ref: ExtensionRef, ctx: ResolveContext) -> ExtensionFilters:
    """The filters for a reference; raises LookupError with a message when it cannot be resolved."""
    factory = _KINDS.get((ref.group, ref.kind))
    if factory is None:
        raise UnknownFilterKind(f"filter kind {ref.group or 'core'}/{ref.kind} is not supported")
    return factory(ref, ctx)


@dataclass(frozen=True, slots=True)
class UnresolvedExtension:
    """Stands in for an ExtensionRef that cannot be resolved: every request gets a 500."""

    message: str

    def apply(self, head: RequestHead) -> DirectResponse | None:
        """Always answer 500 naming the reference."""
        return error_response(500, self.message)
