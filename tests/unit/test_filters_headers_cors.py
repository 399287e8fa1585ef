"""Header modifiers (request and response, rule and backend level) and the CORS filter."""

from __future__ import annotations

import textwrap

import pytest

from gateway.request import DirectResponse
from gateway.snapshot import CompiledRule
from tests.fixtures.route_config import compile_yaml, head, match, route_yaml


def one_rule(filters: str, path: str = "/") -> CompiledRule:
    """A one-rule route on ``path`` with the given ``filters:`` list (any indentation)."""
    rules = (
        f'- matches: [{{path: {{type: PathPrefix, value: "{path}"}}}}]\n'
        "  filters:\n"
        + textwrap.indent(textwrap.dedent(filters).strip(), "  ")
        + "\n  backendRefs: [{name: v1, port: 8080}]"
    )
    snapshot = compile_yaml(route_yaml("r", rules))
    rule = match(snapshot, head(path))
    assert rule is not None
    return rule


def test_request_header_modifier_set_add_remove_case_insensitively() -> None:
    rule = one_rule(
        """
              - type: RequestHeaderModifier
                requestHeaderModifier:
                  set: [{name: X-Header-Set, value: set-overwrites-values}]
                  add: [{name: X-Header-Add, value: add-appends-values}]
                  remove: [X-Header-Remove]
        """
    )
    request = head(
        "/",
        headers={
            "x-header-set": "some-other-value",
            "x-header-add": "some-other-value",
            "x-header-remove": "gone",
            "Keep": "me",
        },
    )
    assert rule.request_filters[0].apply(request) is None
    assert request.get("x-header-set") == "set-overwrites-values"
    assert request.get("x-header-add") == "some-other-value,add-appends-values"
    assert request.get("x-header-remove") is None
    assert request.get("keep") == "me"
    assert sum(1 for name, _ in request.headers if name.lower() == "x-header-set") == 1


def test_request_header_add_when_absent() -> None:
    rule = one_rule(
        """
              - type: RequestHeaderModifier
                requestHeaderModifier:
                  add: [{name: X-Header-Add, value: v}]
                  set: [{name: X-S, value: s}]
        """
    )
    request = head("/")
    rule.request_filters[0].apply(request)
    assert request.get("x-header-add") == "v"
    assert request.get("x-s") == "s"


def test_response_header_modifier() -> None:
    rule = one_rule(
        """
              - type: ResponseHeaderModifier
                responseHeaderModifier:
                  set: [{name: X-Header-Set, value: set}]
                  add: [{name: x-Mixedcase-ADD-1, value: added}]
                  remove: [X-Header-Remove]
        """
    )
    headers = [("x-header-set", "old"), ("X-HEADER-REMOVE", "x"), ("content-type", "text/plain")]
    rule.response_filters[0].apply(head("/"), 200, headers)
    lowered = [(n.lower(), v) for n, v in headers]
    assert ("x-header-set", "set") in lowered
    assert ("x-header-set", "old") not in lowered
    assert ("x-mixedcase-add-1", "added") in lowered
    assert all(n != "x-header-remove" for n, _ in lowered)
    assert ("content-type", "text/plain") in lowered


def test_backend_level_header_modifier_is_per_backend() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            """
            - backendRefs:
              - name: v1
                port: 8080
                weight: 10
                filters:
                - type: RequestHeaderModifier
                  requestHeaderModifier: {set: [{name: Backend, value: v1}]}
              - name: v2
                port: 8080
                weight: 10
                filters:
                - type: RequestHeaderModifier
                  requestHeaderModifier: {set: [{name: Backend, value: v2}]}
            """,
        )
    )
    rule = match(snapshot, head("/"))
    assert rule is not None
    for choice in rule.choices:
        request = head("/")
        choice.request_filters[0].apply(request)
        assert choice.backend is not None
        assert request.get("backend") == choice.backend.destination.service_name


CORS = """
      - type: CORS
        cors:
          allowOrigins: ["https://www.foo.com", "https://*.bar.com"]
          allowMethods: [GET, OPTIONS]
          allowHeaders: [x-header-1, x-header-2]
          exposeHeaders: [x-header-3, x-header-4]
          allowCredentials: true
          maxAge: 3600
"""


def preflight(rule: CompiledRule, origin: str, method: str = "GET", **extra: str) -> DirectResponse:
    headers = {"Origin": origin, "Access-Control-Request-Method": method, **extra}
    request = head("/cors-1", method="OPTIONS", headers=headers)
    for request_filter in rule.request_filters:
        response = request_filter.apply(request)
        if response is not None:
            return response
    raise AssertionError("preflight not answered")


@pytest.mark.parametrize(
    "origin", ["https://www.foo.com", "https://www.bar.com", "https://xpto.www.bar.com"]
)
def test_cors_preflight_allowed_origin(origin: str) -> None:
    rule = one_rule(CORS, "/cors-1")
    response = preflight(rule, origin)
    headers = dict(response.headers)
    assert response.status == 204
    assert headers["access-control-allow-origin"] == origin
    assert headers["access-control-allow-methods"] == "GET, OPTIONS"
    assert headers["access-control-allow-headers"] == "x-header-1, x-header-2"
    assert headers["access-control-expose-headers"] == "x-header-3, x-header-4"
    assert headers["access-control-max-age"] == "3600"
    assert headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize(
    "origin", ["https://foobar.com", "http://www.foo.com", "https://www.foo.com:8443"]
)
def test_cors_preflight_other_origin_gets_no_cors_headers(origin: str) -> None:
    response = preflight(one_rule(CORS, "/cors-1"), origin)
    assert response.status == 204
    assert not any(name.startswith("access-control-") for name, _ in response.headers)


def test_cors_actual_request_gets_allow_origin_on_the_response() -> None:
    rule = one_rule(CORS, "/cors-1")
    request = head("/cors-1", headers={"Origin": "https://www.foo.com"})
    assert all(f.apply(request) is None for f in rule.request_filters)  # not a preflight: forwarded
    headers: list[tuple[str, str]] = [("content-type", "text/plain")]
    for response_filter in rule.response_filters:
        response_filter.apply(request, 200, headers)
    found = dict(headers)
    assert found["access-control-allow-origin"] == "https://www.foo.com"
    assert found["access-control-allow-credentials"] == "true"
    assert found["access-control-expose-headers"] == "x-header-3, x-header-4"

    stranger = head("/cors-1", headers={"Origin": "https://evil.com"})
    plain: list[tuple[str, str]] = []
    for response_filter in rule.response_filters:
        response_filter.apply(stranger, 200, plain)
    assert plain == []


def test_cors_wildcard_origin_without_credentials_answers_star() -> None:
    rule = one_rule(
        """
              - type: CORS
                cors: {allowOrigins: ["*"], allowMethods: [PUT]}
        """,
        "/cors-wildcard-origin",
    )
    headers = dict(preflight(rule, "https://foobar.com:12345", "PUT").headers)
    assert headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in headers


def test_cors_wildcards_with_credentials_echo_the_request() -> None:
    rule = one_rule(
        """
              - type: CORS
                cors:
                  allowOrigins: ["*"]
                  allowMethods: ["*"]
                  allowHeaders: ["*"]
                  allowCredentials: true
        """,
        "/cors-wildcard-methods-headers",
    )
    response = preflight(
        rule, "https://other.foo.com", "PUT", **{"Access-Control-Request-Headers": "x-a, x-b"}
    )
    headers = dict(response.headers)
    assert headers["access-control-allow-origin"] == "https://other.foo.com"
    assert headers["access-control-allow-methods"] == "PUT"
    assert headers["access-control-allow-headers"] == "x-a, x-b"
    assert headers["access-control-allow-credentials"] == "true"
    assert headers["access-control-max-age"] == "5"
