"""The A2ABackend backend kind: a backendRef resolves to the backend's responder app."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agentgw.a2a.api import GROUP, KIND, A2ABackend
from agentgw.a2a.app import A2aApp, AgentTarget
from agentgw.a2a.metrics import A2aMetrics
from agentgw.mcp.state import McpState
from agentgw.resolving import AppBackend, resource_of
from gateway.backends.base import (
    Backend,
    BackendRef,
    Destination,
    ResolveContext,
)


class A2aBackend(AppBackend):
    """A backend answered in the gateway by an :class:`A2aApp`."""

    __slots__ = ()
    responder: A2aApp

    def describe(self) -> Mapping[str, Any]:
        return {"kind": KIND, "agents": {a.name: a.url for a in self.responder.agents.values()}}


def make_factory(state: McpState, metrics: A2aMetrics) -> Any:
    """The backend factory; apps share the upstream connections of ``state``."""

    def resolve(ref: BackendRef, ctx: ResolveContext) -> Backend:
        model = resource_of(ctx, GROUP, KIND, A2ABackend, ref)
        spec = model.spec
        agents = [AgentTarget(a.name, a.url.rstrip("/") + "/") for a in spec.agents]
        app = A2aApp(
            f"{ref.namespace}/{ref.name}",
            agents,
            state.http,
            metrics,
            spec.connect_timeout_seconds,
            spec.idle_timeout_seconds,
        )
        host = f"{ref.name}.{ref.namespace}.a2a"
        return A2aBackend(Destination(ref.name, ref.namespace, host, KIND), app)

    return resolve
