"""Compiling HTTPRoute filters (rule or backendRef level) into filter objects and mirrors."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.compile.errors import RuleInvalid
from gateway.compile.refs import Problem, RefResolver
from gateway.config.models import Cors, Filter, HeaderModifier, PathModifier
from gateway.filters.cors import CorsPolicy, CorsPreflight, CorsResponse, OriginPattern
from gateway.filters.extension import (
    ExtensionRef,
    UnknownFilterKind,
    UnresolvedExtension,
    resolve_extension,
)
from gateway.filters.headers import RequestHeaderModifier, ResponseHeaderModifier
from gateway.filters.redirect import RequestRedirect
from gateway.filters.rewrite import UrlRewrite
from gateway.snapshot import BodyFilter, Mirror, RequestFilter, ResponseFilter, TapFactory

SINGLE_USE = frozenset(
    {"RequestHeaderModifier", "ResponseHeaderModifier", "RequestRedirect", "URLRewrite", "CORS"}
)
_FIELD = {
    "RequestHeaderModifier": "request_header_modifier",
    "ResponseHeaderModifier": "response_header_modifier",
    "RequestRedirect": "request_redirect",
    "URLRewrite": "url_rewrite",
    "RequestMirror": "request_mirror",
    "CORS": "cors",
    "ExtensionRef": "extension_ref",
}
_YAML_FIELD = {
    "request_header_modifier": "requestHeaderModifier",
    "response_header_modifier": "responseHeaderModifier",
    "request_redirect": "requestRedirect",
    "url_rewrite": "urlRewrite",
    "request_mirror": "requestMirror",
    "cors": "cors",
    "extension_ref": "extensionRef",
}
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_ORIGIN = re.compile(
    r"(^\*$)|(^(http(s)?)://(((\*\.)?([a-zA-Z0-9\-]+\.)*[a-zA-Z0-9-]+|\*)(:([0-9]{1,5}))?)$)"
)


@dataclass(slots=True)
class FilterSet:
    """The compiled filters of a rule or backendRef, in the order written."""

    request: list[RequestFilter] = field(default_factory=list)
    response: list[ResponseFilter] = field(default_factory=list)
    body: list[BodyFilter] = field(default_factory=list)
    taps: list[TapFactory] = field(default_factory=list)
    mirrors: list[Mirror] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    redirect: bool = False


def compile_filters(
    filters: list[Filter],
    where: str,
    prefix: str | None,
    route_namespace: str,
    refs: RefResolver,
    route_kind: str = "HTTPRoute",
) -> FilterSet:
    """Compile filters; ``prefix`` is the rule's only PathPrefix match (for ReplacePrefixMatch).

    Raises RuleInvalid (UnsupportedValue / IncompatibleFilters) for filters the rule cannot run.
    """
    out = FilterSet()
    seen: set[str] = set()
    for i, spec in enumerate(filters):
        path = f"{where}.filters[{i}]"
        kind = spec.type
        attr = _FIELD.get(kind)
        if attr is None:
            raise RuleInvalid("UnsupportedValue", f"{path}.type: unsupported filter type {kind!r}")
        _check_union(spec, attr, path)
        if kind in SINGLE_USE and kind in seen:
            raise RuleInvalid("IncompatibleFilters", f"{path}: {kind} may appear only once")
        seen.add(kind)
        if kind == "RequestHeaderModifier":
            assert spec.request_header_modifier is not None
            out.request.append(_request_headers(spec.request_header_modifier, path))
        elif kind == "ResponseHeaderModifier":
            assert spec.response_header_modifier is not None
            out.response.append(_response_headers(spec.response_header_modifier, path))
        elif kind == "RequestRedirect":
            out.request.append(_redirect(spec, path, prefix))
            out.redirect = True
        elif kind == "URLRewrite":
            out.request.append(_rewrite(spec, path, prefix))
        elif kind == "RequestMirror":
            _mirror(spec, path, route_namespace, refs, out, route_kind)
        elif kind == "CORS":
            assert spec.cors is not None
            policy = _cors(spec.cors, path)
            out.request.append(CorsPreflight(policy))
            out.response.append(CorsResponse(policy))
        else:
            _extension(spec, route_namespace, refs, out)
    if "RequestRedirect" in seen and "URLRewrite" in seen:
        raise RuleInvalid(
            "IncompatibleFilters",
            f"{where}.filters: RequestRedirect and URLRewrite cannot be combined",
        )
    return out


def _check_union(spec: Filter, attr: str, path: str) -> None:
    """Exactly the sub-object named by ``type`` is set."""
    if getattr(spec, attr) is None:
        raise RuleInvalid(
            "UnsupportedValue", f"{path}.{_YAML_FIELD[attr]}: required for type {spec.type}"
        )
    for other in _YAML_FIELD:
        if other != attr and getattr(spec, other) is not None:
            raise RuleInvalid(
                "UnsupportedValue",
                f"{path}.{_YAML_FIELD[other]}: must not be set for type {spec.type}",
            )


def _header_names_unique(spec: HeaderModifier, path: str) -> None:
    """Only one action per header name."""
    names = [h.name.lower() for h in spec.set] + [h.name.lower() for h in spec.add]
    names += [n.lower() for n in spec.remove]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise RuleInvalid(
            "UnsupportedValue", f"{path}: header {duplicates[0]!r} is modified more than once"
        )


def _request_headers(spec: HeaderModifier, path: str) -> RequestHeaderModifier:
    _header_names_unique(spec, f"{path}.requestHeaderModifier")
    return RequestHeaderModifier(
        set=tuple((h.name, h.value) for h in spec.set),
        add=tuple((h.name, h.value) for h in spec.add),
        remove=tuple(spec.remove),
    )


def _response_headers(spec: HeaderModifier, path: str) -> ResponseHeaderModifier:
    _header_names_unique(spec, f"{path}.responseHeaderModifier")
    return ResponseHeaderModifier(
        set=tuple((h.name, h.value) for h in spec.set),
        add=tuple((h.name, h.value) for h in spec.add),
        remove=frozenset(n.lower() for n in spec.remove),
    )


def _path_modifier(
    spec: PathModifier | None, path: str, prefix: str | None
) -> tuple[str | None, str | None, str | None]:
    """(full path, matched prefix, replacement) for a redirect/rewrite path modifier."""
    if spec is None:
        return None, None, None
    if spec.type == "ReplaceFullPath":
        if spec.replace_full_path is None or spec.replace_prefix_match is not None:
            raise RuleInvalid(
                "UnsupportedValue",
                f"{path}.replaceFullPath: required (and only it) for ReplaceFullPath",
            )
        return spec.replace_full_path, None, None
    if spec.type == "ReplacePrefixMatch":
        if spec.replace_prefix_match is None or spec.replace_full_path is not None:
            raise RuleInvalid(
                "UnsupportedValue",
                f"{path}.replacePrefixMatch: required (and only it) for ReplacePrefixMatch",
            )
        if prefix is None:
            raise RuleInvalid(
                "IncompatibleFilters",
                f"{path}: ReplacePrefixMatch needs exactly one match in the rule, a PathPrefix",
            )
        return None, prefix, spec.replace_prefix_match
    raise RuleInvalid("UnsupportedValue", f"{path}.type: unsupported path modifier {spec.type!r}")


def _redirect(spec: Filter, path: str, prefix: str | None) -> RequestRedirect:
    redirect = spec.request_redirect
    assert redirect is not None
    path = f"{path}.requestRedirect"
    if redirect.scheme is not None and redirect.scheme not in ("http", "https"):
        raise RuleInvalid(
            "UnsupportedValue", f"{path}.scheme: unsupported value {redirect.scheme!r}"
        )
    if redirect.status_code not in _REDIRECT_CODES:
        raise RuleInvalid(
            "UnsupportedValue", f"{path}.statusCode: unsupported value {redirect.status_code}"
        )
    full, matched, replacement = _path_modifier(redirect.path, f"{path}.path", prefix)
    return RequestRedirect(
        scheme=redirect.scheme,
        hostname=redirect.hostname,
        port=redirect.port,
        status=redirect.status_code,
        full_path=full,
        prefix=matched,
        prefix_replacement=replacement,
    )


def _rewrite(spec: Filter, path: str, prefix: str | None) -> UrlRewrite:
    rewrite = spec.url_rewrite
    assert rewrite is not None
    full, matched, replacement = _path_modifier(rewrite.path, f"{path}.urlRewrite.path", prefix)
    return UrlRewrite(
        hostname=rewrite.hostname, full_path=full, prefix=matched, prefix_replacement=replacement
    )


def _mirror(
    spec: Filter, path: str, namespace: str, refs: RefResolver, out: FilterSet, route_kind: str
) -> None:
    mirror = spec.request_mirror
    assert mirror is not None
    path = f"{path}.requestMirror"
    if mirror.percent is not None and mirror.fraction is not None:
        raise RuleInvalid("UnsupportedValue", f"{path}: set percent or fraction, not both")
    fraction = 1.0
    if mirror.percent is not None:
        fraction = mirror.percent / 100
    elif mirror.fraction is not None:
        if mirror.fraction.numerator > mirror.fraction.denominator:
            raise RuleInvalid(
                "UnsupportedValue", f"{path}.fraction: numerator must not exceed denominator"
            )
        fraction = mirror.fraction.numerator / mirror.fraction.denominator
    backend, problem = refs.backend(namespace, mirror.backend_ref, route_kind=route_kind)
    if backend is None:
        assert problem is not None
        out.problems.append((problem[0], f"{path}.backendRef: {problem[1]}"))
        return
    out.mirrors.append(Mirror(backend, fraction))


def _cors(spec: Cors, path: str) -> CorsPolicy:
    path = f"{path}.cors"
    for name, values in (
        ("allowOrigins", spec.allow_origins),
        ("allowMethods", spec.allow_methods),
        ("allowHeaders", spec.allow_headers),
        ("exposeHeaders", spec.expose_headers),
    ):
        if "*" in values and len(values) > 1:
            raise RuleInvalid(
                "UnsupportedValue", f"{path}.{name}: '*' cannot be mixed with other values"
            )
    for i, origin in enumerate(spec.allow_origins):
        if not _ORIGIN.match(origin):
            raise RuleInvalid(
                "UnsupportedValue",
                f"{path}.allowOrigins[{i}]: {origin!r} is not '*' or scheme://host[:port]",
            )
    any_origin = spec.allow_origins == ["*"]
    return CorsPolicy(
        any_origin=any_origin,
        origins=() if any_origin else tuple(OriginPattern.parse(o) for o in spec.allow_origins),
        credentials=bool(spec.allow_credentials),
        methods=tuple(spec.allow_methods),
        headers=tuple(spec.allow_headers),
        expose=tuple(spec.expose_headers),
        max_age=spec.max_age,
    )


def _extension(spec: Filter, namespace: str, refs: RefResolver, out: FilterSet) -> None:
    target = spec.extension_ref
    assert target is not None
    ref = ExtensionRef(target.group, target.kind, target.name, namespace)
    try:
        resolved = resolve_extension(ref, refs.resources)
    except LookupError as exc:
        reason = "InvalidKind" if isinstance(exc, UnknownFilterKind) else "BackendNotFound"
        message = f"ExtensionRef {ref} cannot be resolved: {exc}"
        out.problems.append((reason, message))
        out.request.append(UnresolvedExtension(message))
        return
    if resolved.request is not None:
        out.request.append(resolved.request)
    if resolved.response is not None:
        out.response.append(resolved.response)
    if resolved.body is not None:
        out.body.append(resolved.body)
    if resolved.tap is not None:
        out.taps.append(resolved.tap)
