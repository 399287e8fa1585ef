"""The core ``""/Service`` backend kind: a Service port, its ready endpoints, a balancer.

Resolution: the backendRef ``port`` (required) selects a Service port; the EndpointSlices labelled
``kubernetes.io/service-name: <service>`` supply the endpoints, using the slice port with the same
name as the Service port. A slice that lists ports but not that name does not serve it; for an
unnamed Service port, or a slice without ports, the Service's numeric ``targetPort`` (else its
``port``) is used. Endpoints whose ``conditions.ready`` is false are left out; absent counts as
ready. A Service with no ready endpoint is still a valid backend: ``pick`` returns None (503).

Endpoints speak ``h2c`` when the Service port's ``appProtocol`` is ``kubernetes.io/h2c``, ``http2``
or ``grpc``, else HTTP/1.1. A BackendTLSPolicy on the port (applied by compile through
:meth:`ServiceBackend.with_tls`) makes them speak TLS: HTTP/2 (ALPN ``h2``) for those
appProtocols and ``h2`` / ``kubernetes.io/h2``, HTTP/1.1 (ALPN ``http/1.1``) otherwise. The
policy is the explicit statement that the port speaks TLS, so it wins over the cleartext of
``kubernetes.io/h2c``: that port is spoken to in HTTP/2 over TLS, never in cleartext.

Load balancing is chosen with Service annotations:

``gateway.ambient.dev/load-balancer``
    ``least-request`` (default; power of two choices), ``round-robin``, ``random`` or
    ``consistent-hash``.
``gateway.ambient.dev/hash-on``
    for consistent hashing: ``header:<name>``, ``cookie:<name>`` or ``source-ip`` (default).
    Setting it alone implies ``consistent-hash``.

(parsed by :mod:`gateway.backends.lb_annotations`). ExternalName Services are not supported.

An HTTPRoute rule's ``sessionPersistence`` overrides the policy with consistent hashing on its
cookie or header (see :meth:`ServiceBackend.with_policy`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from gateway.backends.base import (
    BackendRef,
    BackendResolveError,
    Destination,
    Endpoint,
    ResolveContext,
    register_backend_kind,
)
from gateway.backends.lb_annotations import policy_from_annotations
from gateway.config.models import EndpointSlice, Service, ServicePort
from gateway.config.resources import SERVICE_NAME_LABEL, ResourceSet
from gateway.lb import make_balancer
from gateway.lb.policy import LbPolicy

if TYPE_CHECKING:
    from gateway.backends.base import Outcome, ProxyRequest
    from gateway.lb.policy import Balancer
    from gateway.tls.upstream import UpstreamTls

_H2C_PROTOCOLS = frozenset({"kubernetes.io/h2c", "http2", "grpc"})
# appProtocols spoken in HTTP/2 when a BackendTLSPolicy puts the port on TLS.
_H2_TLS_PROTOCOLS = _H2C_PROTOCOLS | {"h2", "kubernetes.io/h2"}


class ServiceBackend:
    """A Service port's ready endpoints behind a load balancer.

    ``pick`` and ``done`` are the balancer's own bound methods (same signatures), set per
    instance so a request pays no wrapper call (python -m bench.instructions).
    """

    __slots__ = (
        "_balancer",
        "app_protocol",
        "destination",
        "done",
        "endpoints",
        "pick",
        "policy",
        "port",
        "port_name",
        "tls",
    )

    def __init__(
        self,
        destination: Destination,
        port: int,
        endpoints: tuple[Endpoint, ...],
        policy: LbPolicy,
        port_name: str | None = None,
        app_protocol: str | None = None,
        tls: UpstreamTls | None = None,
    ) -> None:
        self.destination = destination
        self.port = port
        self.port_name = port_name  # the Service port's name: a BackendTLSPolicy's sectionName
        self.app_protocol = app_protocol
        self.endpoints = endpoints
        self.policy = policy
        self.tls = tls
        balancer: Balancer = make_balancer(policy, endpoints)
        self._balancer = balancer
        # pick: an endpoint (None when the Service has no ready endpoint); done: the try's
        # outcome to the balancer (its load, and passive health).
        self.pick: Callable[[ProxyRequest, tuple[Endpoint, ...]], Endpoint | None] = balancer.pick
        self.done: Callable[[Endpoint, Outcome], None] = balancer.release

    def with_policy(self, policy: LbPolicy) -> ServiceBackend:
        """The same endpoints balanced another way (sessionPersistence)."""
        return ServiceBackend(
            self.destination,
            self.port,
            self.endpoints,
            policy,
            self.port_name,
            self.app_protocol,
            self.tls,
        )

    def with_tls(self, settings: Callable[[bool], UpstreamTls]) -> ServiceBackend:
        """The same endpoints over TLS; ``settings(http2)`` gives the UpstreamTls to use."""
        tls = settings(self.app_protocol in _H2_TLS_PROTOCOLS)
        endpoints = tuple(Endpoint(e.address, e.port, tls.protocol, tls) for e in self.endpoints)
        return ServiceBackend(
            self.destination,
            self.port,
            endpoints,
            self.policy,
            self.port_name,
            self.app_protocol,
            tls,
        )

    def describe(self) -> Mapping[str, Any]:
        """A JSON-able view for /config_dump."""
        return {
            "kind": "Service",
            "service": f"{self.destination.namespace}/{self.destination.service_name}",
            "host": self.destination.host,
            "port": self.port,
            "lb": {"kind": self.policy.kind, "hashOn": self.policy.hash_on},
            "tls": self.tls.describe() if self.tls is not None else None,
            "endpoints": [
                {"address": e.address, "port": e.port, "protocol": e.protocol}
                for e in self.endpoints
            ],
        }


def resolve_service(ref: BackendRef, ctx: ResolveContext) -> ServiceBackend:
    """Build the backend for a Service backendRef or raise BackendResolveError."""
    service, slices = _lookup(ref, ctx)
    if service is None:
        raise BackendResolveError(
            "BackendNotFound", f"Service {ref.namespace}/{ref.name} not found"
        )
    if service.spec.type == "ExternalName":
        raise BackendResolveError(
            "InvalidKind",
            f"Service {ref.namespace}/{ref.name} is an ExternalName Service (unsupported)",
        )
    if ref.port is None:
        raise BackendResolveError(
            "BackendNotFound", f"backendRef to Service {ref.namespace}/{ref.name} must set port"
        )
    svc_port = next((p for p in service.spec.ports if p.port == ref.port), None)
    if svc_port is None:
        raise BackendResolveError(
            "BackendNotFound", f"Service {ref.namespace}/{ref.name} has no port {ref.port}"
        )
    destination = Destination(
        service_name=ref.name,
        namespace=ref.namespace,
        host=f"{ref.name}.{ref.namespace}.svc.cluster.local",
    )
    endpoints = ready_endpoints(svc_port, slices)
    return ServiceBackend(
        destination,
        ref.port,
        endpoints,
        policy_from_annotations(service.metadata.annotations),
        svc_port.name,
        svc_port.app_protocol,
    )


def ready_endpoints(svc_port: ServicePort, slices: list[EndpointSlice]) -> tuple[Endpoint, ...]:
    """The ready endpoints of a Service port across its EndpointSlices, de-duplicated."""
    protocol = "h2c" if svc_port.app_protocol in _H2C_PROTOCOLS else "http/1.1"
    wanted = svc_port.name or ""
    fallback = svc_port.target_port if isinstance(svc_port.target_port, int) else None
    seen: dict[Endpoint, None] = {}
    for endpoint_slice in slices:
        port = next((p.port for p in endpoint_slice.ports if (p.name or "") == wanted), None)
        if port is None:
            if wanted and endpoint_slice.ports:
                continue  # this slice's endpoints do not serve the named port
            port = fallback if fallback is not None else svc_port.port
        for entry in endpoint_slice.endpoints:
            if entry.conditions.ready is False:
                continue
            for address in entry.addresses:
                seen.setdefault(Endpoint(address, port, protocol), None)
    return tuple(seen)


def _lookup(ref: BackendRef, ctx: ResolveContext) -> tuple[Service | None, list[EndpointSlice]]:
    """The Service and its slices: indexed when compiling a ResourceSet, else from raw objects."""
    if isinstance(ctx, ResourceSet):
        return ctx.services.get((ref.namespace, ref.name)), ctx.slices_for(ref.namespace, ref.name)
    raw = ctx.find("", "Service", ref.namespace, ref.name)
    if raw is None:
        return None, []
    slices = [
        EndpointSlice.model_validate(s)
        for s in ctx.list("discovery.k8s.io", "EndpointSlice", ref.namespace)
        if (s.get("metadata") or {}).get("labels", {}).get(SERVICE_NAME_LABEL) == ref.name
    ]
    return Service.model_validate(raw), slices


register_backend_kind("", "Service", resolve_service)
