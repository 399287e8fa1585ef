"""What the agent gateway's backend kinds share when a backendRef resolves: the backend that an
in-gateway app answers, and the Secret values their specs name."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.backends.base import (
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
