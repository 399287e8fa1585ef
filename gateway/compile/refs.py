"""Resolving backendRefs (rule, backend-level and mirror) with ReferenceGrant checks and a cache."""

from __future__ import annotations

from gateway.backends.base import (
    Backend,
    BackendRef,
    BackendResolveError,
    ResolveContext,
    resolve_backend,
)
from gateway.backends.service import ServiceBackend, resolve_service
from gateway.compile.backend_tls import INVALID_BACKEND_TLS, BackendTlsTable, compile_backend_tls
from gateway.compile.grants import GrantIndex
from gateway.config.models import GATEWAY_GROUP, BackendObjectRef
from gateway.config.resources import ResourceSet
from gateway.lb.policy import LbPolicy

Problem = tuple[str, str]  # (ResolvedRefs reason, message)


class RefResolver:
    """Turns backendRefs into Backends once per compile; the same ref shares one balancer."""

    __slots__ = ("_cache", "grants", "resources", "tls")

    def __init__(
        self,
        resources: ResourceSet,
        grants: GrantIndex,
        tls: BackendTlsTable | None = None,
        cache: dict[tuple[BackendRef, LbPolicy | None], Backend | BackendResolveError]
        | None = None,
    ) -> None:
        self.resources = resources
        self.grants = grants
        self.tls = tls
        # ``cache``: the backends of a previous compile of the same Services and policies.
        self._cache = {} if cache is None else cache

    def backend(
        self,
        route_namespace: str,
        spec: BackendObjectRef,
        policy: LbPolicy | None = None,
        route_kind: str = "HTTPRoute",
    ) -> tuple[Backend | None, Problem | None]:
        """The backend for a route's ref (HTTPRoute or GRPCRoute), or the ResolvedRefs problem."""
        ref = BackendRef(
            spec.group, spec.kind, spec.name, spec.namespace or route_namespace, spec.port
        )
        if not self.grants.permits(
            GATEWAY_GROUP,
            route_kind,
            route_namespace,
            ref.group,
            ref.kind,
            ref.namespace,
            ref.name,
        ):
            return None, (
                "RefNotPermitted",
                f"backendRef to {ref.kind} {ref.namespace}/{ref.name} is not permitted by any "
                f"ReferenceGrant in namespace {ref.namespace}",
            )
        key = (ref, policy)
        cached = self._cache.get(key)
        if cached is None:
            cached = self._resolve(ref, policy)
            self._cache[key] = cached
        if isinstance(cached, BackendResolveError):
            return None, (cached.reason, cached.message)
        return cached, None

    def _resolve(self, ref: BackendRef, policy: LbPolicy | None) -> Backend | BackendResolveError:
        """Resolve through the backend-kind registry; a BackendTLSPolicy puts a Service port on
        TLS (or makes the ref invalid); session persistence re-balances Services."""
        try:
            backend = resolve_backend(ref, self.resources)
        except BackendResolveError as exc:
            return exc
        if not isinstance(backend, ServiceBackend):
            return backend
        if self.tls is not None:
            try:
                backend = with_backend_tls(backend, self.tls)
            except BackendResolveError as exc:
                return exc
        if policy is not None:
            return backend.with_policy(policy)
        return backend


def with_backend_tls(backend: ServiceBackend, table: BackendTlsTable) -> ServiceBackend:
    """``backend`` over TLS when a BackendTLSPolicy of ``table`` targets its port (as is when
    none does); BackendResolveError (InvalidBackendTLS) when that policy is not valid."""
    destination = backend.destination
    tls = table.for_port(destination.namespace, destination.service_name, backend.port_name)
    if isinstance(tls, str):
        raise BackendResolveError(INVALID_BACKEND_TLS, tls)
    return backend if tls is None else backend.with_tls(tls.upstream)


def resolve_service_ref(ref: BackendRef, ctx: ResolveContext) -> ServiceBackend:
    """A Service backendRef resolved as a route's is, a BackendTLSPolicy on its port included:
    for backend kinds that reach Services themselves (an MCPBackend's ``backendRef`` targets).
    BackendResolveError naming the Service, or its invalid policy, otherwise."""
    backend = resolve_service(ref, ctx)
    if not isinstance(ctx, ResourceSet):
        return backend  # no policies outside a compile
    return with_backend_tls(backend, compile_backend_tls(ctx, (ref.namespace, ref.name)))
