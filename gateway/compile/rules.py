"""Compiling one HTTPRoute rule: matches, filters, backends, timeouts, retry, persistence."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.compile.errors import RuleInvalid
from gateway.compile.filters import compile_filters
from gateway.compile.refs import Problem, RefResolver
from gateway.config.duration import parse_duration
from gateway.config.models import (
    HttpRoute,
    NameValueMatch,
    RouteMatch,
    RouteRule,
    SessionPersistence,
)
from gateway.lb.policy import LbPolicy
from gateway.route_weights import ROUTE_WEIGHTS
from gateway.routing.match import PATH_EXACT, PATH_PREFIX, PATH_REGEX, MatchEntry, ValueMatch
from gateway.snapshot import (
    BackendChoice,
    CompiledRule,
    RetryPolicy,
    RouteRef,
    SessionAffinity,
    Timeouts,
)

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
DEFAULT_SESSION_COOKIE = "ambient-session"


@dataclass(slots=True)
class RuleResult:
    """A compiled rule and its match entries, or why the rule was dropped."""

    index: int
    rule: CompiledRule | None = None
    entries: list[MatchEntry] = field(default_factory=list)
    invalid: RuleInvalid | None = None
    problems: list[Problem] = field(default_factory=list)


def compile_rule(
    route: HttpRoute, index: int, spec: RouteRule, age: float, refs: RefResolver
) -> RuleResult:
    """Compile one rule; a RuleInvalid drops it (the route's status says why)."""
    try:
        return _compile(route, index, spec, age, refs)
    except RuleInvalid as exc:
        return RuleResult(index, invalid=exc)


def _compile(
    route: HttpRoute, index: int, spec: RouteRule, age: float, refs: RefResolver
) -> RuleResult:
    meta = route.metadata
    where = f"spec.rules[{index}]"
    matches = [_match_parts(m, f"{where}.matches[{j}]") for j, m in enumerate(spec.matches)]
    only = spec.matches[0].path if len(spec.matches) == 1 else None
    prefix = only.value if only is not None and only.type == PATH_PREFIX else None

    filters = compile_filters(spec.filters, where, prefix, meta.namespace, refs)
    problems = list(filters.problems)
    if filters.redirect and spec.backend_refs:
        raise RuleInvalid(
            "IncompatibleFilters", f"{where}: RequestRedirect cannot be combined with backendRefs"
        )
    affinity, policy = session_persistence(spec.session_persistence, f"{where}.sessionPersistence")
    choices: list[BackendChoice] = []
    for j, ref in enumerate(spec.backend_refs):
        ref_where = f"{where}.backendRefs[{j}]"
        ref_filters = compile_filters(ref.filters, ref_where, prefix, meta.namespace, refs)
        problems += ref_filters.problems
        backend, problem = refs.backend(meta.namespace, ref, policy)
        error = None
        if problem is not None:
            problems.append(problem)
            error = problem[1]
        choices.append(
            BackendChoice(
                weight=ref.weight,
                backend=backend,
                error=error,
                name=ref.name,
                request_filters=tuple(ref_filters.request),
                response_filters=tuple(ref_filters.response),
                mirrors=tuple(ref_filters.mirrors),
                body_filters=tuple(ref_filters.body),
                taps=tuple(ref_filters.taps),
            )
        )
    rule = CompiledRule(
        ref=RouteRef("HTTPRoute", meta.namespace, meta.name, index, spec.name),
        choices=tuple(choices),
        request_filters=tuple(filters.request),
        response_filters=tuple(filters.response),
        mirrors=tuple(filters.mirrors),
        timeouts=_timeouts(spec, where),
        retry=_retry(spec, where),
        affinity=affinity,
        body_filters=tuple(filters.body),
        taps=tuple(filters.taps),
    )
    ROUTE_WEIGHTS.track(rule)
    name_key = f"{meta.namespace}/{meta.name}"
    entries = [
        MatchEntry(
            rule=rule,
            match_index=j,
            path_type=path_type,
            path=path,
            path_regex=regex,
            method=method,
            headers=headers,
            query=query,
            key=(0 if method else 1, -len(headers), -len(query), age, name_key, index, j),
        )
        for j, (path_type, path, regex, method, headers, query) in enumerate(matches)
    ]
    return RuleResult(index, rule, entries, None, problems)


_MatchParts = tuple[
    str, str, "re.Pattern[str] | None", "str | None", tuple[ValueMatch, ...], tuple[ValueMatch, ...]
]


def _match_parts(spec: RouteMatch, where: str) -> _MatchParts:
    """Validate and compile one HTTPRouteMatch (regexes compiled here, once)."""
    path_type, value = spec.path.type, spec.path.value
    regex = None
    if path_type == PATH_REGEX:
        regex = compile_regex(value, f"{where}.path.value")
    elif path_type not in (PATH_EXACT, PATH_PREFIX):
        raise RuleInvalid("UnsupportedValue", f"{where}.path.type: unsupported value {path_type!r}")
    if spec.method is not None and spec.method not in METHODS:
        raise RuleInvalid("UnsupportedValue", f"{where}.method: unsupported value {spec.method!r}")
    headers = value_matches(spec.headers, f"{where}.headers", lower=True)
    query = value_matches(spec.query_params, f"{where}.queryParams", lower=False)
    return path_type, value, regex, spec.method, headers, query


def value_matches(
    specs: list[NameValueMatch], where: str, *, lower: bool
) -> tuple[ValueMatch, ...]:
    """Header or query predicates; among duplicate names only the first counts."""
    out: dict[str, ValueMatch] = {}
    for i, spec in enumerate(specs):
        name = spec.name.lower() if lower else spec.name
        if spec.type == "RegularExpression":
            regex = compile_regex(spec.value, f"{where}[{i}].value")
        elif spec.type == "Exact":
            regex = None
        else:
            raise RuleInvalid(
                "UnsupportedValue", f"{where}[{i}].type: unsupported value {spec.type!r}"
            )
        out.setdefault(name, ValueMatch(name, spec.value, regex))
    return tuple(out.values())


def compile_regex(value: str, where: str) -> re.Pattern[str]:
    """Compile a RegularExpression value (Python ``re``, full-match semantics)."""
    try:
        return re.compile(value)
    except re.error as exc:
        raise RuleInvalid(
            "UnsupportedValue", f"{where}: invalid regular expression {value!r}: {exc}"
        ) from exc


def _duration(text: str | None, where: str) -> float | None:
    """Seconds, or None when unset or ``0s`` (disabled)."""
    if text is None:
        return None
    try:
        seconds = parse_duration(text)
    except ValueError as exc:
        raise RuleInvalid("UnsupportedValue", f"{where}: {exc}") from exc
    return seconds or None


def _timeouts(spec: RouteRule, where: str) -> Timeouts:
    """``timeouts.request`` / ``timeouts.backendRequest``; backendRequest may not exceed request."""
    if spec.timeouts is None:
        return Timeouts()
    request = _duration(spec.timeouts.request, f"{where}.timeouts.request")
    backend = _duration(spec.timeouts.backend_request, f"{where}.timeouts.backendRequest")
    if request is not None and backend is not None and backend > request:
        raise RuleInvalid(
            "UnsupportedValue",
            f"{where}.timeouts.backendRequest: {spec.timeouts.backend_request} is longer than "
            f"timeouts.request {spec.timeouts.request}",
        )
    return Timeouts(request, backend)


def _retry(spec: RouteRule, where: str) -> RetryPolicy | None:
    """``retry``: attempts (retries after the first try, default 1), codes, backoff."""
    retry = spec.retry
    if retry is None:
        return None
    attempts = 1 if retry.attempts is None else retry.attempts
    backoff = _duration(retry.backoff, f"{where}.retry.backoff") or 0.0
    if attempts == 0:
        return None
    return RetryPolicy(attempts, frozenset(retry.codes), backoff)


def session_persistence(
    spec: SessionPersistence | None, where: str
) -> tuple[SessionAffinity | None, LbPolicy | None]:
    """sessionPersistence as the cookie/header to set, and the hashing policy it needs."""
    if spec is None:
        return None, None
    if spec.type == "Header":
        name = (spec.header.name if spec.header else None) or spec.session_name
        if not name:
            raise RuleInvalid("UnsupportedValue", f"{where}.header.name: required for type Header")
        return SessionAffinity("Header", name), LbPolicy("ConsistentHash", f"header:{name}")
    if spec.type != "Cookie":
        raise RuleInvalid("UnsupportedValue", f"{where}.type: unsupported value {spec.type!r}")
    cookie = spec.cookie or spec.cookie_config
    name = (cookie.name if cookie else None) or spec.session_name or DEFAULT_SESSION_COOKIE
    path = (cookie.path if cookie else None) or "/"
    max_age = None
    if cookie is not None and cookie.lifetime_type == "Permanent":
        lifetime = _duration(spec.absolute_timeout, f"{where}.absoluteTimeout")
        if lifetime is None:
            raise RuleInvalid(
                "UnsupportedValue", f"{where}.absoluteTimeout: required for a Permanent cookie"
            )
        max_age = int(lifetime)
    elif cookie is not None and cookie.lifetime_type != "Session":
        raise RuleInvalid(
            "UnsupportedValue",
            f"{where}.cookie.lifetimeType: unsupported value {cookie.lifetime_type!r}",
        )
    return SessionAffinity("Cookie", name, path, max_age), LbPolicy(
        "ConsistentHash", f"cookie:{name}"
    )
