"""Compiling one GRPCRoute rule: method matches as path predicates, filters, weighted backends.

A gRPC request's path is ``/<service>/<method>``, so each method match becomes the equivalent
path predicate and GRPCRoutes share the HTTPRoute router and its indexes:

==========================  =====================  ===========================
service / method            Exact                  RegularExpression
==========================  =====================  ===========================
both                        path Exact ``/S/M``    regex ``/(?:S)/(?:M)``
service only                PathPrefix ``/S/``     regex ``/(?:S)/[^/]+``
method only                 regex ``/[^/]+/M``     regex ``/[^/]+/(?:M)``
neither (no method match)   regex ``/.*``          -
==========================  =====================  ===========================

The router tries Exact paths, then prefixes, then regexes, each list in precedence order, and the
key below orders candidates by service characters, method characters, then header matches, as
GRPCRouteRule.Matches says. Hence service+method beats service-only, which beats method-only,
which beats a rule without method match. Between an Exact and a RegularExpression match the Exact
one wins (the spec leaves RegularExpression precedence to implementations); regexes among
themselves count their pattern's characters.
"""

from __future__ import annotations

from gateway.compile.errors import RuleInvalid
from gateway.compile.filters import FilterSet, compile_filters
from gateway.compile.refs import RefResolver
from gateway.compile.rules import RuleResult, compile_regex, session_persistence, value_matches
from gateway.config.models import Filter, GrpcRoute, GrpcRouteMatch, GrpcRouteRule
from gateway.routing.match import PATH_EXACT, PATH_PREFIX, PATH_REGEX, GrpcMethod, MatchEntry
from gateway.snapshot import BackendChoice, CompiledRule, RouteRef

GRPC_ROUTE = "GRPCRoute"
GRPC_FILTERS = frozenset(
    {"RequestHeaderModifier", "ResponseHeaderModifier", "RequestMirror", "ExtensionRef"}
)


def compile_grpc_rule(
    route: GrpcRoute, index: int, spec: GrpcRouteRule, age: float, refs: RefResolver
) -> RuleResult:
    """Compile one rule; a RuleInvalid drops it (the route's status says why)."""
    try:
        return _compile(route, index, spec, age, refs)
    except RuleInvalid as exc:
        return RuleResult(index, invalid=exc)


def _compile(
    route: GrpcRoute, index: int, spec: GrpcRouteRule, age: float, refs: RefResolver
) -> RuleResult:
    meta = route.metadata
    where = f"spec.rules[{index}]"
    filters = _filters(spec.filters, where, meta.namespace, refs)
    problems = list(filters.problems)
    affinity, policy = session_persistence(spec.session_persistence, f"{where}.sessionPersistence")
    choices: list[BackendChoice] = []
    for j, ref in enumerate(spec.backend_refs):
        ref_where = f"{where}.backendRefs[{j}]"
        ref_filters = _filters(ref.filters, ref_where, meta.namespace, refs)
        problems += ref_filters.problems
        backend, problem = refs.backend(meta.namespace, ref, policy, route_kind=GRPC_ROUTE)
        error = None
        if problem is not None:
            problems.append(problem)
            error = problem[1]
        choices.append(
            BackendChoice(
                weight=ref.weight,
                backend=backend,
                error=error,
                request_filters=tuple(ref_filters.request),
                response_filters=tuple(ref_filters.response),
                mirrors=tuple(ref_filters.mirrors),
                body_filters=tuple(ref_filters.body),
                taps=tuple(ref_filters.taps),
            )
        )
    rule = CompiledRule(
        ref=RouteRef(GRPC_ROUTE, meta.namespace, meta.name, index, spec.name),
        choices=tuple(choices),
        request_filters=tuple(filters.request),
        response_filters=tuple(filters.response),
        mirrors=tuple(filters.mirrors),
        affinity=affinity,
        body_filters=tuple(filters.body),
        taps=tuple(filters.taps),
    )
    name_key = f"{meta.namespace}/{meta.name}"
    entries = []
    for j, match in enumerate(spec.matches):
        match_where = f"{where}.matches[{j}]"
        path_type, path, grpc, service_chars, method_chars = _method(match, match_where)
        headers = value_matches(match.headers, f"{match_where}.headers", lower=True)
        entries.append(
            MatchEntry(
                rule=rule,
                match_index=j,
                path_type=path_type,
                path=path,
                path_regex=compile_regex(path, f"{match_where}.method")
                if path_type == PATH_REGEX
                else None,
                method=None,
                headers=headers,
                query=(),
                key=(-service_chars, -method_chars, -len(headers), age, name_key, index, j),
                grpc=grpc,
            )
        )
    return RuleResult(index, rule, entries, None, problems)


def _filters(specs: list[Filter], where: str, namespace: str, refs: RefResolver) -> FilterSet:
    """HTTPRoute's filter compilers, limited to the filter types GRPCRoute allows."""
    for i, spec in enumerate(specs):
        if spec.type not in GRPC_FILTERS:
            raise RuleInvalid(
                "UnsupportedValue",
                f"{where}.filters[{i}].type: filter type {spec.type!r} is not supported on "
                f"GRPCRoute (allowed: {', '.join(sorted(GRPC_FILTERS))})",
            )
    return compile_filters(specs, where, None, namespace, refs, route_kind=GRPC_ROUTE)


def _method(match: GrpcRouteMatch, where: str) -> tuple[str, str, GrpcMethod | None, int, int]:
    """(path type, path value, method as written, service chars, method chars) for a match."""
    spec = match.method
    if spec is None:
        return PATH_REGEX, "/.*", None, 0, 0
    grpc = GrpcMethod(spec.type, spec.service, spec.method)
    service, method = spec.service, spec.method
    if spec.type == "Exact":
        if service is not None and method is not None:
            return PATH_EXACT, f"/{service}/{method}", grpc, len(service), len(method)
        if service is not None:
            return PATH_PREFIX, f"/{service}/", grpc, len(service), 0
        assert method is not None  # the model requires service or method
        return PATH_REGEX, f"/[^/]+/{method}", grpc, 0, len(method)
    if spec.type == "RegularExpression":
        for field, value in (("service", service), ("method", method)):
            if value is not None:
                compile_regex(value, f"{where}.method.{field}")  # names the field in errors
        service_part = f"(?:{service})" if service is not None else "[^/]+"
        method_part = f"(?:{method})" if method is not None else "[^/]+"
        return (
            PATH_REGEX,
            f"/{service_part}/{method_part}",
            grpc,
            len(service or ""),
            len(method or ""),
        )
    raise RuleInvalid("UnsupportedValue", f"{where}.method.type: unsupported value {spec.type!r}")
