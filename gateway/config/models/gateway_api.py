"""Gateway API models: Gateway, HTTPRoute and ReferenceGrant (shape and types only).

GRPCRoute lives in ``grpc_route`` and shares the route parts defined here.

Enum-like fields stay plain strings: an unknown value must make a route "not Accepted" rather
than break the whole config, so compile judges them.
"""

from __future__ import annotations

from collections.abc import Sequence, Sized
from typing import Annotated, Protocol

from pydantic import Field, ValidationInfo, field_validator, model_validator

from gateway.config.models.base import (
    GATEWAY_GROUP,
    Metadata,
    Model,
    Port,
    check_header_name,
    check_hostname,
    check_path_value,
)

# --- Gateway ---------------------------------------------------------------------------------


class LabelSelectorRequirement(Model):
    """One ``matchExpressions`` entry."""

    key: str
    operator: str
    values: list[str] = Field(default_factory=list)


class LabelSelector(Model):
    """A Kubernetes label selector."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = Field(default_factory=list)


class RouteNamespaces(Model):
    """``allowedRoutes.namespaces``."""

    from_: str = Field(default="Same", alias="from")
    selector: LabelSelector | None = None


class RouteGroupKind(Model):
    """``allowedRoutes.kinds[]``."""

    group: str = GATEWAY_GROUP
    kind: str


class AllowedRoutes(Model):
    """Which routes may attach to a listener."""

    namespaces: RouteNamespaces = Field(default_factory=RouteNamespaces)
    kinds: list[RouteGroupKind] = Field(default_factory=list)


class SecretObjectRef(Model):
    """``tls.certificateRefs[]``: a Secret by default; namespace defaults to the Gateway's."""

    group: str = ""
    kind: str = "Secret"
    name: str = Field(min_length=1, max_length=253)
    namespace: str | None = None


class ListenerTls(Model):
    """``listeners[].tls``: mode (Terminate by default) and the certificates to serve."""

    mode: str = "Terminate"
    certificate_refs: list[SecretObjectRef] = Field(default_factory=list, max_length=64)
    options: dict[str, str] = Field(default_factory=dict)


_NO_TLS_PROTOCOLS = frozenset({"HTTP", "TCP", "UDP"})


class Listener(Model):
    """A Gateway listener."""

    name: str = Field(min_length=1)
    hostname: str | None = None
    port: Port
    protocol: str
    tls: ListenerTls | None = None
    allowed_routes: AllowedRoutes = Field(default_factory=AllowedRoutes)

    _hostname = field_validator("hostname")(lambda v: v if v is None else check_hostname(v))

    @model_validator(mode="after")
    def _tls_for_protocol(self) -> Listener:
        # The API server's rule: plain-text protocols carry no TLS settings.
        if self.tls is not None and self.protocol in _NO_TLS_PROTOCOLS:
            raise ValueError(f"tls: must not be set for protocol {self.protocol}")
        return self


class GatewaySpec(Model):
    """Gateway spec."""

    gateway_class_name: str
    listeners: list[Listener] = Field(min_length=1, max_length=64)

    @field_validator("listeners")
    @classmethod
    def _listeners(cls, listeners: list[Listener]) -> list[Listener]:
        names = [listener.name for listener in listeners]
        if len(names) != len(set(names)):
            raise ValueError("listener names must be unique within the Gateway")
        combos = [(item.port, item.protocol, item.hostname) for item in listeners]
        if len(combos) != len(set(combos)):
            raise ValueError(
                "each listener needs a distinct port, protocol and hostname combination"
            )
        return listeners


class Gateway(Model):
    """gateway.networking.k8s.io Gateway."""

    metadata: Metadata
    spec: GatewaySpec


# --- HTTPRoute -------------------------------------------------------------------------------


class ParentRef(Model):
    """``spec.parentRefs[]``."""

    group: str = GATEWAY_GROUP
    kind: str = "Gateway"
    namespace: str | None = None
    name: str = Field(min_length=1)
    section_name: str | None = None
    port: Port | None = None


class PathMatch(Model):
    """``matches[].path``."""

    type: str = "PathPrefix"
    value: str = Field(default="/", max_length=1024)

    @field_validator("value")
    @classmethod
    def _value(cls, value: str, info: ValidationInfo) -> str:
        if info.data.get("type", "PathPrefix") in ("Exact", "PathPrefix"):
            check_path_value(value)
        return value


class NameValueMatch(Model):
    """A header or query-parameter match."""

    type: str = "Exact"
    name: str = Field(min_length=1, max_length=256)
    value: str = Field(min_length=1, max_length=4096)

    _name = field_validator("name")(check_header_name)


class RouteMatch(Model):
    """``rules[].matches[]``: AND of everything it sets."""

    path: PathMatch = Field(default_factory=PathMatch)
    headers: list[NameValueMatch] = Field(default_factory=list, max_length=16)
    query_params: list[NameValueMatch] = Field(default_factory=list, max_length=16)
    method: str | None = None


class HeaderValue(Model):
    """A header name and value in a header modifier."""

    name: str = Field(min_length=1, max_length=256)
    value: str = Field(max_length=4096)


class HeaderModifier(Model):
    """RequestHeaderModifier / ResponseHeaderModifier."""

    set: list[HeaderValue] = Field(default_factory=list, max_length=16)
    add: list[HeaderValue] = Field(default_factory=list, max_length=16)
    remove: list[str] = Field(default_factory=list, max_length=16)


class PathModifier(Model):
    """Redirect or rewrite ``path``."""

    type: str
    replace_full_path: str | None = None
    replace_prefix_match: str | None = None


class RequestRedirect(Model):
    """RequestRedirect filter."""

    scheme: str | None = None
    hostname: str | None = None
    path: PathModifier | None = None
    port: Port | None = None
    status_code: int = 302

    _hostname = field_validator("hostname")(lambda v: v if v is None else check_hostname(v))


class UrlRewrite(Model):
    """URLRewrite filter."""

    hostname: str | None = None
    path: PathModifier | None = None

    _hostname = field_validator("hostname")(lambda v: v if v is None else check_hostname(v))


class BackendObjectRef(Model):
    """A BackendObjectReference: group "" and kind Service by default."""

    group: str = ""
    kind: str = "Service"
    name: str = Field(min_length=1)
    namespace: str | None = None
    port: Port | None = None

    @model_validator(mode="after")
    def _service_port(self) -> BackendObjectRef:
        if self.group == "" and self.kind == "Service" and self.port is None:
            raise ValueError("port is required for a Service reference")
        return self


class Fraction(Model):
    """A mirror fraction."""

    numerator: int = Field(ge=0)
    denominator: int = Field(default=100, ge=1)


class RequestMirror(Model):
    """RequestMirror filter."""

    backend_ref: BackendObjectRef
    percent: int | None = Field(default=None, ge=0, le=100)
    fraction: Fraction | None = None


class Cors(Model):
    """CORS filter."""

    allow_origins: list[str] = Field(default_factory=list, max_length=64)
    allow_credentials: bool | None = None
    allow_methods: list[str] = Field(default_factory=list)
    allow_headers: list[str] = Field(default_factory=list)
    expose_headers: list[str] = Field(default_factory=list)
    max_age: int = Field(default=5, ge=0)


class LocalObjectRef(Model):
    """ExtensionRef target."""

    group: str
    kind: str
    name: str = Field(min_length=1)


class Filter(Model):
    """``rules[].filters[]`` (and backendRef filters): a tagged union on ``type``."""

    type: str
    request_header_modifier: HeaderModifier | None = None
    response_header_modifier: HeaderModifier | None = None
    request_redirect: RequestRedirect | None = None
    url_rewrite: UrlRewrite | None = Field(default=None, alias="urlRewrite")
    request_mirror: RequestMirror | None = None
    cors: Cors | None = None
    extension_ref: LocalObjectRef | None = None


class HttpBackendRef(BackendObjectRef):
    """``rules[].backendRefs[]``: a backend, its weight and its own filters."""

    weight: int = Field(default=1, ge=0, le=1_000_000)
    filters: list[Filter] = Field(default_factory=list, max_length=16)


class RouteTimeouts(Model):
    """``rules[].timeouts``: GEP-2257 durations, checked by compile."""

    request: str | None = None
    backend_request: str | None = None


class RouteRetry(Model):
    """``rules[].retry``."""

    codes: list[Annotated[int, Field(ge=400, le=599)]] = Field(default_factory=list)
    attempts: int | None = Field(default=None, ge=0)
    backoff: str | None = None


class CookieConfig(Model):
    """``sessionPersistence.cookie`` (main) / ``cookieConfig`` (v1.4)."""

    name: str | None = None
    path: str | None = None
    lifetime_type: str = "Session"


class HeaderConfig(Model):
    """``sessionPersistence.header``."""

    name: str | None = None


class SessionPersistence(Model):
    """``rules[].sessionPersistence`` (both the v1.4 and main-branch field names)."""

    type: str = "Cookie"
    session_name: str | None = None
    cookie: CookieConfig | None = None
    cookie_config: CookieConfig | None = None
    header: HeaderConfig | None = None
    absolute_timeout: str | None = None
    idle_timeout: str | None = None


# GEP-995 rule names are SectionNames: a DNS subdomain, 1-253 characters.
SECTION_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class RouteRule(Model):
    """``spec.rules[]``."""

    name: str | None = Field(default=None, min_length=1, max_length=253, pattern=SECTION_NAME)
    matches: list[RouteMatch] = Field(default_factory=lambda: [RouteMatch()], max_length=64)
    filters: list[Filter] = Field(default_factory=list, max_length=16)
    backend_refs: list[HttpBackendRef] = Field(default_factory=list, max_length=16)
    timeouts: RouteTimeouts | None = None
    retry: RouteRetry | None = None
    session_persistence: SessionPersistence | None = None

    @field_validator("matches")
    @classmethod
    def _match_all(cls, matches: list[RouteMatch]) -> list[RouteMatch]:
        # "If no matches are specified" (the spec) covers an explicit [] as well as an omitted
        # field: both mean PathPrefix "/", which matches every request.
        return matches or [RouteMatch()]


class CommonRouteSpec(Model):
    """What HTTPRoute and GRPCRoute specs share: parentRefs and hostnames."""

    parent_refs: list[ParentRef] = Field(default_factory=list, max_length=32)
    hostnames: list[str] = Field(default_factory=list, max_length=16)

    @field_validator("hostnames")
    @classmethod
    def _hostnames(cls, values: list[str]) -> list[str]:
        for value in values:
            check_hostname(value)
        return values

    @field_validator("parent_refs")
    @classmethod
    def _parent_refs(cls, refs: list[ParentRef]) -> list[ParentRef]:
        seen: dict[tuple[str, str, str | None, str], list[ParentRef]] = {}
        for ref in refs:
            seen.setdefault((ref.group, ref.kind, ref.namespace, ref.name), []).append(ref)
        for same in seen.values():
            if len(same) < 2:
                continue
            keys = [(r.section_name, r.port) for r in same]
            if any(k == (None, None) for k in keys) or len(set(keys)) != len(keys):
                raise ValueError(
                    f"parentRefs to {same[0].kind} {same[0].name} must each set a distinct "
                    "sectionName (or port)"
                )
        return refs


class NamedRule(Protocol):
    """A route rule as check_rules sees it."""

    @property
    def name(self) -> str | None: ...

    @property
    def matches(self) -> Sized: ...


def check_rules(rules: Sequence[NamedRule]) -> None:
    """Rule names unique; at most 128 matches across all rules (HTTPRoute and GRPCRoute)."""
    names = [r.name for r in rules if r.name is not None]
    if len(names) != len(set(names)):
        raise ValueError("rule names must be unique within the route")
    if sum(len(r.matches) for r in rules) > 128:
        raise ValueError("at most 128 matches across all rules")


class HttpRouteSpec(CommonRouteSpec):
    """HTTPRoute spec."""

    rules: list[RouteRule] = Field(default_factory=lambda: [RouteRule()], max_length=16)

    @field_validator("rules")
    @classmethod
    def _rules(cls, rules: list[RouteRule]) -> list[RouteRule]:
        check_rules(rules)
        return rules


class HttpRoute(Model):
    """gateway.networking.k8s.io HTTPRoute."""

    metadata: Metadata
    spec: HttpRouteSpec = Field(default_factory=HttpRouteSpec)


# --- ReferenceGrant ----------------------------------------------------------------------------


class GrantFrom(Model):
    """``spec.from[]``: every field required."""

    group: str
    kind: str
    namespace: str


class GrantTo(Model):
    """``spec.to[]``: name omitted means every object of the kind."""

    group: str
    kind: str
    name: str | None = None


class ReferenceGrantSpec(Model):
    """ReferenceGrant spec."""

    from_: list[GrantFrom] = Field(alias="from", min_length=1, max_length=16)
    to: list[GrantTo] = Field(min_length=1, max_length=16)


class ReferenceGrant(Model):
    """gateway.networking.k8s.io ReferenceGrant."""

    metadata: Metadata
    spec: ReferenceGrantSpec
