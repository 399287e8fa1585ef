"""RequestRedirect (Location port/scheme derivation, paths) and URLRewrite (ReplacePrefixMatch)."""

from __future__ import annotations

import pytest

from gateway.request import DirectResponse, RequestHead
from gateway.snapshot import CompiledRule
from tests.fixtures.route_config import compile_yaml, head, match, route_yaml


def redirect_rule(
    redirect: str, match_yaml: str = "{path: {type: PathPrefix, value: /}}", probe: str = "/"
) -> CompiledRule:
    """The compiled rule of a one-rule route with a RequestRedirect filter."""
    snapshot = compile_yaml(
        route_yaml(
            "redirect",
            f"""
            - matches: [{match_yaml}]
              filters:
              - type: RequestRedirect
                requestRedirect: {redirect}
            """,
        )
    )
    rule = match(snapshot, head(probe))
    assert rule is not None
    return rule


def run(rule: CompiledRule, request: RequestHead) -> DirectResponse:
    for request_filter in rule.request_filters:
        response = request_filter.apply(request)
        if response is not None:
            return response
    raise AssertionError("no filter answered")


def location(response: DirectResponse) -> str:
    return dict(response.headers)["location"]


@pytest.mark.parametrize(
    ("scheme", "listener_port", "redirect", "expected"),
    [
        ("http", 80, "{hostname: example.org}", "http://example.org/"),
        ("http", 80, "{hostname: example.org, port: 80}", "http://example.org/"),
        ("http", 80, "{hostname: example.org, port: 8080}", "http://example.org:8080/"),
        ("http", 80, "{hostname: example.org, scheme: https}", "https://example.org/"),
        ("http", 80, "{hostname: example.org, scheme: https, port: 443}", "https://example.org/"),
        (
            "http",
            80,
            "{hostname: example.org, scheme: https, port: 8443}",
            "https://example.org:8443/",
        ),
        ("http", 8080, "{hostname: example.org}", "http://example.org:8080/"),
        ("http", 8080, "{hostname: example.org, port: 80}", "http://example.org/"),
        ("http", 8080, "{hostname: example.org, scheme: https}", "https://example.org/"),
        ("https", 443, "{hostname: example.org}", "https://example.org/"),
        ("https", 443, "{hostname: example.org, port: 8443}", "https://example.org:8443/"),
        ("https", 443, "{hostname: example.org, scheme: http}", "http://example.org/"),
        ("https", 443, "{hostname: example.org, scheme: http, port: 80}", "http://example.org/"),
        (
            "https",
            443,
            "{hostname: example.org, scheme: http, port: 8080}",
            "http://example.org:8080/",
        ),
    ],
)
def test_redirect_port_and_scheme_matrix(
    scheme: str, listener_port: int, redirect: str, expected: str
) -> None:
    rule = redirect_rule(redirect)
    response = run(rule, head("/", host="gateway.test", scheme=scheme, port=listener_port))
    assert response.status == 302
    assert location(response) == expected


def test_redirect_defaults_keep_host_path_and_query() -> None:
    rule = redirect_rule("{scheme: https}")
    response = run(rule, head("/a/b?x=1&y=2", host="Shop.Example.com:8080"))
    assert location(response) == "https://shop.example.com/a/b?x=1&y=2"


@pytest.mark.parametrize(
    ("redirect", "status", "expected"),
    [
        ("{}", 302, "/a?x=1"),  # same scheme and port: a path-absolute reference
        ("{port: 8080}", 302, "/a?x=1"),
        ("{hostname: example.org}", 302, "http://example.org:8080/a?x=1"),
        ("{scheme: https}", 400, None),  # an absolute URL needs a host nobody gave
        ("{port: 9090}", 400, None),
    ],
)
def test_redirect_without_host_header(redirect: str, status: int, expected: str | None) -> None:
    response = run(redirect_rule(redirect), head("/a?x=1", host="", port=8080))
    assert response.status == status
    assert dict(response.headers).get("location") == expected


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
def test_redirect_status_codes(code: int) -> None:
    assert run(redirect_rule(f"{{statusCode: {code}}}"), head("/")).status == code


def test_redirect_replace_full_path() -> None:
    rule = redirect_rule(
        "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}",
        "{path: {type: PathPrefix, value: /}}",
    )
    assert (
        location(run(rule, head("/full/path/original?q=1")))
        == "http://example.com/full-path-replacement?q=1"
    )


def test_redirect_replace_prefix_match() -> None:
    rule = redirect_rule(
        "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
        "{path: {type: PathPrefix, value: /original-prefix}}",
        probe="/original-prefix/lemon",
    )
    response = run(rule, head("/original-prefix/lemon"))
    assert location(response) == "http://example.com/replacement-prefix/lemon"


REWRITE_TABLE = [
    ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
    ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
    ("/foo", "/foo", "/xyz", "/xyz"),
    ("/foo/", "/foo", "/xyz", "/xyz/"),
    ("/foo/bar", "/foo", "", "/bar"),
    ("/foo/", "/foo", "", "/"),
    ("/foo", "/foo", "", "/"),
    ("/foo/", "/foo", "/", "/"),
    ("/foo", "/foo", "/", "/"),
]


@pytest.mark.parametrize(("path", "prefix", "replacement", "expected"), REWRITE_TABLE)
def test_rewrite_replace_prefix_match_table(
    path: str, prefix: str, replacement: str, expected: str
) -> None:
    snapshot = compile_yaml(
        route_yaml(
            "rewrite",
            f"""
            - matches: [{{path: {{type: PathPrefix, value: "{prefix}"}}}}]
              filters:
              - type: URLRewrite
                urlRewrite:
                  path: {{type: ReplacePrefixMatch, replacePrefixMatch: "{replacement}"}}
              backendRefs: [{{name: v1, port: 8080}}]
            """,
        )
    )
    request = head(f"{path}?keep=1&a=b")
    rule = match(snapshot, request)
    assert rule is not None
    for request_filter in rule.request_filters:
        assert request_filter.apply(request) is None
    assert request.path == expected
    assert request.target == f"{expected}?keep=1&a=b"


def test_rewrite_hostname_and_full_path() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "rewrite",
            """
            - matches: [{path: {type: PathPrefix, value: /full/one}}]
              filters:
              - type: URLRewrite
                urlRewrite:
                  hostname: one.example.org
                  path: {type: ReplaceFullPath, replaceFullPath: /one}
              backendRefs: [{name: v1, port: 8080}]
            """,
        )
    )
    request = head("/full/one/two?x=y", host="example.com:80")
    rule = match(snapshot, request)
    assert rule is not None
    rule.request_filters[0].apply(request)
    assert request.path == "/one"
    assert request.query == "x=y"
    assert request.get("host") == "one.example.org"
    assert request.host == "one.example.org"


def test_backend_level_rewrite_runs_only_for_its_backend() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "rewrite",
            """
            - matches: [{path: {type: PathPrefix, value: /prefix}}]
              backendRefs:
              - name: v1
                port: 8080
                filters:
                - type: URLRewrite
                  urlRewrite:
                    path: {type: ReplacePrefixMatch, replacePrefixMatch: /rewritten-prefix}
            """,
        )
    )
    request = head("/prefix/original")
    rule = match(snapshot, request)
    assert rule is not None and rule.request_filters == ()
    choice = rule.choose()
    assert choice is not None
    choice.request_filters[0].apply(request)
    assert request.path == "/rewritten-prefix/original"
