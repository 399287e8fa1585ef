"""What the agent gateway's backend kinds share when a backendRef resolves: the backend that an
in-gateway app answers, the resource a backendRef names, and the Secret and ConfigMap values their
specs name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from gateway.backends.base import (
    BackendRef,
    BackendResolveError,
    Destination,
    Endpoint,
    Outcome,
    ProxyRequest,
    ResolveContext,
)
from gateway.config.models import Secret


@dataclass(slots=True)
class AppBackend:
    """A backend answered in the gateway by its ``responder`` app (``pick`` is never called)."""

    destination: Destination
    responder: Any

    def pick(self, request: ProxyRequest, tried: tuple[Endpoint, ...] = ()) -> Endpoint | None:
        return None

    def done(self, endpoint: Endpoint, outcome: Outcome) -> None:
        return None

    def describe(self) -> Mapping[str, Any]:
        return {"kind": self.destination.kind}


M = TypeVar("M")


def resource_of(ctx: ResolveContext, group: str, kind: str, model: type[M], ref: BackendRef) -> M:
    """The ``kind`` resource ``ref`` names, validated as ``model``; BackendNotFound without it."""
    found = ctx.typed(group, kind, ref.namespace, ref.name)
    if not isinstance(found, model):
        raise BackendResolveError("BackendNotFound", f"{kind} {ref.namespace}/{ref.name} not found")
    return found


def secret_value(
    ctx: ResolveContext, namespace: str, name: str, key: str, where: str, field: str
) -> bytes:
    """The value of ``key`` in Secret ``namespace/name``; BackendNotFound naming ``where`` and
    ``field`` when the Secret or its key is missing."""
    secret = ctx.typed("", "Secret", namespace, name)
    if not isinstance(secret, Secret):
        raise BackendResolveError(
            "BackendNotFound", f"{where}: {field}: Secret {namespace}/{name} not found"
        )
    value = secret.value(key)
    if not value:
        raise BackendResolveError(
            "BackendNotFound", f"{where}: {field}: Secret {namespace}/{name} has no key {key!r}"
        )
    return value


def config_map_value(
    ctx: ResolveContext, namespace: str, name: str, key: str, where: str, field: str
) -> str:
    """The value of ``key`` in ConfigMap ``namespace/name``; BackendNotFound naming ``where``
    and ``field`` when the ConfigMap or its key is missing."""
    raw = ctx.find("", "ConfigMap", namespace, name)
    if raw is None:
        raise BackendResolveError(
            "BackendNotFound", f"{where}: {field}: ConfigMap {namespace}/{name} not found"
        )
    value = (raw.get("data") or {}).get(key)
    if not isinstance(value, str):
        raise BackendResolveError(
            "BackendNotFound", f"{where}: {field}: ConfigMap {namespace}/{name} has no key {key!r}"
        )
    return value
