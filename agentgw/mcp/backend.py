"""The MCPBackend backend kind: a backendRef resolves to the backend's MCP endpoint app."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import yaml

from agentgw.client_keys import compile_keys
from agentgw.mcp.a2a_tools import A2aToolServer
from agentgw.mcp.api import (
    GROUP,
    KIND,
    JwtAuthentication,
    MCPBackend,
    MCPBackendSpec,
    ObjectKeyRef,
    OpenApiTarget,
)
from agentgw.mcp.api import Target as ApiTarget
from agentgw.mcp.app import McpApp
from agentgw.mcp.authn import Authenticator, JwksError, JwtAuth, load_jwks
from agentgw.mcp.authz import Policy
from agentgw.mcp.budgets import CallBudgets
from agentgw.mcp.federation import Federation, targets_of
from agentgw.mcp.local import LocalTarget
from agentgw.mcp.names import Naming
from agentgw.mcp.openapi import OpenApiError, OpenApiServer
from agentgw.mcp.sealing import Sealer, derive_key
from agentgw.mcp.service_target import ServiceUpstream, UnresolvedTarget
from agentgw.mcp.sse_upstream import SseUpstream
from agentgw.mcp.state import McpState
from agentgw.mcp.stdio import StdioUpstream
from agentgw.mcp.upstream import Target, Upstream
from agentgw.resolving import AppBackend, config_map_value, resource_of, secret_value
from gateway.backends.base import (
    Backend,
    BackendRef,
    BackendResolveError,
    Destination,
    ResolveContext,
)
from gateway.compile.refs import resolve_service_ref

log = logging.getLogger("agentgw.mcp")


class McpBackend(AppBackend):
    """A backend answered in the gateway by an :class:`McpApp`."""

    __slots__ = ()
    responder: McpApp

    def describe(self) -> Mapping[str, Any]:
        federation = self.responder.federation
        return {
            "kind": KIND,
            "targets": {name: u.url for name, u in federation.upstreams.items()},
            "prefixed": federation.naming.prefixed,
            "failOpen": federation.fail_open,
        }


def make_factory(state: McpState) -> Any:
    """The backend factory; every app shares ``state`` (the upstream client)."""

    def resolve(ref: BackendRef, ctx: ResolveContext) -> Backend:
        model = resource_of(ctx, GROUP, KIND, MCPBackend, ref)
        where = f"{KIND} {ref.namespace}/{ref.name}"
        spec = model.spec
        identity = f"{ref.namespace}/{ref.name}"
        if spec.session_key_secret_ref is None:
            log.warning("%s: no sessionKeySecretRef: sessions end with this process", where)
            sealer = Sealer.random(identity.encode())
        else:
            session_key = spec.session_key_secret_ref
            key = secret_value(
                ctx,
                ref.namespace,
                session_key.name,
                session_key.key,
                where,
                "spec.sessionKeySecretRef",
            )
            sealer = Sealer(derive_key(key), identity.encode())
        upstreams: list[Target] = []
        for i, target in enumerate(spec.targets):
            if target.stdio is not None:
                stdio = target.stdio
                upstreams.append(
                    StdioUpstream(
                        target.name,
                        stdio.command,
                        tuple(stdio.args),
                        dict(stdio.env),
                        spec.idle_timeout_seconds,
                        state.channels,
                    )
                )
            elif target.open_api is not None:
                server = _openapi(ctx, ref.namespace, target.open_api, where, spec, i)
                upstreams.append(LocalTarget(target.name, target.open_api.base_url, server))
            elif target.a2a is not None:
                tools = A2aToolServer(
                    target.a2a.url, spec.connect_timeout_seconds, spec.idle_timeout_seconds
                )
                upstreams.append(LocalTarget(target.name, target.a2a.url, tools))
            elif target.sse is not None:
                upstreams.append(
                    SseUpstream(
                        target.name,
                        target.sse.url,
                        spec.connect_timeout_seconds,
                        spec.idle_timeout_seconds,
                        state.channels,
                    )
                )
            elif target.backend_ref is not None:
                upstreams.append(_service_target(ctx, ref.namespace, target, spec, where, i))
            elif target.streamable_http is not None:
                upstreams.append(
                    Upstream(
                        target.name,
                        target.streamable_http.url,
                        spec.connect_timeout_seconds,
                        spec.idle_timeout_seconds,
                    )
                )
        naming = Naming.of(tuple(u.name for u in upstreams), spec.prefix_mode)
        rules = spec.authorization.rules if spec.authorization is not None else []
        federation = Federation(
            identity,
            targets_of(upstreams),
            naming,
            spec.failure_mode == "FailOpen",
            sealer,
            state,
            Policy.of(rules) if rules else None,
        )
        auth = None
        if spec.authentication is not None:
            authentication = spec.authentication
            jwt = authentication.jwt
            auth = Authenticator(
                _jwt_auth(ctx, ref.namespace, jwt, where) if jwt is not None else None,
                compile_keys(
                    ctx, ref.namespace, authentication.api_keys, where, "authentication.apiKeys"
                ),
            )
        budgets = None
        if spec.budgets.tool_calls_per_minute or spec.budgets.concurrent_tool_calls:
            budgets = CallBudgets(
                identity,
                spec.budgets.tool_calls_per_minute,
                spec.budgets.concurrent_tool_calls,
                state.buckets,
            )
        app = McpApp(federation, spec.max_message_bytes, spec.heartbeat_seconds, auth, budgets)
        host = f"{ref.name}.{ref.namespace}.mcp"
        return McpBackend(Destination(ref.name, ref.namespace, host, KIND), app)

    return resolve


def _service_target(
    ctx: ResolveContext,
    namespace: str,
    target: ApiTarget,
    spec: MCPBackendSpec,
    where: str,
    i: int,
) -> Target:
    """A backendRef target: the Service's endpoints (with its BackendTLSPolicy), or a target
    that fails naming why (``failureMode`` then decides what sessions do)."""
    config = target.backend_ref
    assert config is not None
    service_ref = BackendRef("", "Service", config.name, namespace, config.port)
    try:
        service = resolve_service_ref(service_ref, ctx)
    except BackendResolveError as exc:
        reason = f"spec.targets[{i}].backendRef: {exc.message}"
        log.warning("%s: target %s: %s", where, target.name, reason)
        url = f"service://{namespace}/{config.name}:{config.port}{config.path}"
        return UnresolvedTarget(target.name, url, reason)
    return ServiceUpstream(
        target.name,
        service,
        config.path,
        spec.connect_timeout_seconds,
        spec.idle_timeout_seconds,
    )


def _config_map(
    ctx: ResolveContext, namespace: str, ref: ObjectKeyRef, where: str, field: str
) -> str:
    return config_map_value(ctx, namespace, ref.name, ref.key, where, field)


def _openapi(
    ctx: ResolveContext,
    namespace: str,
    config: OpenApiTarget,
    where: str,
    spec: MCPBackendSpec,
    i: int,
) -> OpenApiServer:
    field = f"spec.targets[{i}].openAPI.schema"
    text = _config_map(ctx, namespace, config.schema_.config_map_ref, where, field)
    try:
        document = yaml.safe_load(text)
        if not isinstance(document, dict):
            raise OpenApiError("not a JSON or YAML object")
        return OpenApiServer(
            document, config.base_url, spec.connect_timeout_seconds, spec.idle_timeout_seconds
        )
    except (yaml.YAMLError, OpenApiError) as exc:
        raise BackendResolveError("BackendNotFound", f"{where}: {field}: {exc}") from exc


def _jwt_auth(
    ctx: ResolveContext, namespace: str, config: JwtAuthentication, where: str
) -> JwtAuth:
    field = "spec.authentication.jwt.jwks"
    document = _config_map(ctx, namespace, config.jwks.config_map_ref, where, field)
    try:
        keys = load_jwks(document)
    except JwksError as exc:
        raise BackendResolveError("BackendNotFound", f"{where}: {field}: {exc}") from exc
    return JwtAuth(config.issuer, tuple(config.audiences), keys, config.clock_skew_seconds)
