"""Conformance: URLRewrite hostname, ReplaceFullPath and the spec's ReplacePrefixMatch table.

Every case sends a query string and expects it at the backend unchanged (research note §1.5.3,
HTTPRouteRewritePath, HTTPRouteRewriteHost, HTTPRouteBackendURLRewrite).
"""

from __future__ import annotations

import pytest

from tests.fixtures.conformance import REPLACE_PREFIX_MATCH, backend_of, deploy, route_doc

QUERY = "?a=1&b=x%20y&a=2"


def _rewrite_rule(prefix: str, spec: str, backend_level: bool = False) -> str:
    rewrite = f"""
    - type: URLRewrite
      urlRewrite: {spec}"""
    if backend_level:
        return f"""
- matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
  backendRefs:
    - name: v1
      port: 80
      filters:{rewrite.replace(chr(10), chr(10) + "    ")}
"""
    return f"""
- matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
  filters:{rewrite}
  backendRefs: [{{name: v1, port: 80}}]
"""


@pytest.mark.parametrize(("path", "prefix", "replacement", "expected"), REPLACE_PREFIX_MATCH)
async def test_replace_prefix_match_table(
    echo_factory, gateway_factory, free_port: int, path, prefix, replacement, expected
) -> None:
    spec = f"{{path: {{type: ReplacePrefixMatch, replacePrefixMatch: {replacement!r}}}}}"
    routes = route_doc("rewrite", _rewrite_rule(prefix, spec))
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        response = await dep.client.get(path + QUERY)
    assert (backend_of(response), response.json()["path"]) == ("v1", expected + QUERY)


ROUTES = route_doc(
    "rewrite",
    _rewrite_rule("/prefix/one", "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}")
    + _rewrite_rule("/strip-prefix", "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}")
    + _rewrite_rule("/full/one", "{path: {type: ReplaceFullPath, replaceFullPath: /one}}")
    + _rewrite_rule("/host", "{hostname: one.example.org}")
    + _rewrite_rule(
        "/both", "{hostname: two.example.org, path: {type: ReplaceFullPath, replaceFullPath: /b}}"
    )
    + _rewrite_rule(
        "/backend-full", "{path: {type: ReplaceFullPath, replaceFullPath: /rewritten-full}}", True
    )
    + _rewrite_rule(
        "/backend-prefix",
        "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /rewritten-prefix}}",
        True,
    ),
)


@pytest.mark.parametrize(
    ("path", "expected_path", "expected_host"),
    [
        ("/prefix/one/two", "/one/two", "sent.example.com:8080"),
        ("/strip-prefix/three", "/three", "sent.example.com:8080"),
        ("/strip-prefix", "/", "sent.example.com:8080"),
        ("/full/one/two", "/one", "sent.example.com:8080"),
        ("/host/path", "/host/path", "one.example.org"),
        ("/both/x", "/b", "two.example.org"),
        ("/backend-full/original", "/rewritten-full", "sent.example.com:8080"),
        ("/backend-prefix/original", "/rewritten-prefix/original", "sent.example.com:8080"),
    ],
)
async def test_url_rewrite(
    echo_factory, gateway_factory, free_port: int, path, expected_path, expected_host
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.get(path + QUERY, headers={"Host": "sent.example.com:8080"})
    seen = response.json()
    assert (seen["path"], seen["host"]) == (expected_path + QUERY, expected_host)
