"""Conformance: RequestRedirect Location (scheme, hostname, port derivation, path) and status.

The listener port is a free port P rather than 80, so "listener port" rows expect ``:P``
(research note §1.5.2, HTTPRouteRedirectPortAndScheme, -HostAndStatus, -Path, 30xRedirect).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from tests.fixtures.conformance import REPLACE_PREFIX_MATCH, backend_of, deploy, route_doc
from tests.fixtures.proxy import raw_request


def _redirect(prefix: str, spec: str) -> str:
    return f"""
- matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
  filters:
    - type: RequestRedirect
      requestRedirect: {spec}
"""


ROUTES = route_doc(
    "redirect",
    _redirect("/nil-nil", "{hostname: example.org}")
    + _redirect("/nil-80", "{hostname: example.org, port: 80}")
    + _redirect("/nil-8080", "{hostname: example.org, port: 8080}")
    + _redirect("/https-nil", "{hostname: example.org, scheme: https}")
    + _redirect("/https-443", "{hostname: example.org, scheme: https, port: 443}")
    + _redirect("/https-8443", "{hostname: example.org, scheme: https, port: 8443}")
    + _redirect("/http-nil", "{scheme: http}")
    + _redirect("/keep-host", "{}")
    + _redirect("/status-301", "{statusCode: 301}"),
) + route_doc(
    "redirect-2",
    _redirect("/status-302", "{statusCode: 302}")
    + _redirect("/status-303", "{statusCode: 303}")
    + _redirect("/status-307", "{statusCode: 307}")
    + _redirect("/status-308", "{statusCode: 308}")
    + _redirect(
        "/original-prefix",
        "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}",
    )
    + _redirect("/full", "{path: {type: ReplaceFullPath, replaceFullPath: /full-path-replacement}}")
    + _redirect("/strip", "{path: {type: ReplacePrefixMatch, replacePrefixMatch: /}}")
    + _redirect(
        "/everything",
        "{scheme: https, hostname: example.com, port: 8443, statusCode: 301, path: "
        "{type: ReplaceFullPath, replaceFullPath: /new}}",
    )
    + """
- matches: [{path: {type: PathPrefix, value: /backend-redirect}}]
  backendRefs:
    - name: v1
      port: 80
      filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: /redirected}}
""",
)

P = "P"  # stands for the listener port in the table below


@pytest.mark.parametrize(
    ("method", "path", "host", "status", "location"),
    [
        # HTTPRouteRedirectPortAndScheme: (scheme, hostname, port, path); None = no port or default
        ("GET", "/nil-nil", "any.com", 302, ("http", "example.org", P, "/nil-nil")),
        ("GET", "/nil-80", "any.com", 302, ("http", "example.org", None, "/nil-80")),
        ("GET", "/nil-8080", "any.com", 302, ("http", "example.org", 8080, "/nil-8080")),
        ("GET", "/https-nil", "any.com", 302, ("https", "example.org", None, "/https-nil")),
        ("GET", "/https-443", "any.com", 302, ("https", "example.org", None, "/https-443")),
        ("GET", "/https-8443", "any.com", 302, ("https", "example.org", 8443, "/https-8443")),
        ("GET", "/http-nil", "any.com:1234", 302, ("http", "any.com", None, "/http-nil")),
        # Hostname from the Host header (its port dropped); port from the listener.
        ("GET", "/keep-host/x", "foo.com:1234", 302, ("http", "foo.com", P, "/keep-host/x")),
        ("GET", "/status-301", "a.com", 301, ("http", "a.com", P, "/status-301")),
        ("GET", "/status-302", "a.com", 302, ("http", "a.com", P, "/status-302")),
        ("POST", "/status-303", "a.com", 303, ("http", "a.com", P, "/status-303")),
        ("GET", "/status-307", "a.com", 307, ("http", "a.com", P, "/status-307")),
        ("GET", "/status-308", "a.com", 308, ("http", "a.com", P, "/status-308")),
        # HTTPRouteRedirectPath
        (
            "GET",
            "/original-prefix/lemon",
            "a.com",
            302,
            ("http", "a.com", P, "/replacement-prefix/lemon"),
        ),
        (
            "GET",
            "/full/path/original",
            "a.com",
            302,
            ("http", "a.com", P, "/full-path-replacement"),
        ),
        ("GET", "/strip/one", "a.com", 302, ("http", "a.com", P, "/one")),
        ("GET", "/strip", "a.com", 302, ("http", "a.com", P, "/")),
        ("GET", "/everything/x", "a.com", 301, ("https", "example.com", 8443, "/new")),
        # HTTPRouteBackendRequestRedirect
        ("GET", "/backend-redirect/x", "a.com", 302, ("http", "a.com", P, "/redirected")),
    ],
)
async def test_redirect_location(
    echo_factory, gateway_factory, free_port: int, method, path, host, status, location
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.request(method, path, headers={"Host": host})
    url = urlsplit(response.headers["location"])
    scheme, hostname, port, want_path = location
    default = {"http": 80, "https": 443}[scheme]
    assert (response.status_code, backend_of(response)) == (status, None)
    assert (url.scheme, url.hostname, url.port or default, url.path) == (
        scheme,
        hostname,
        free_port if port == P else port or default,
        want_path,
    )
    if port is None:  # the spec's SHOULD: no explicit well-known port
        assert url.port is None


async def test_redirect_keeps_the_query_string(
    echo_factory, gateway_factory, free_port: int
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.get("/original-prefix/lemon?a=1&b=x%20y")
    assert urlsplit(response.headers["location"]).path == "/replacement-prefix/lemon"
    assert urlsplit(response.headers["location"]).query == "a=1&b=x%20y"


@pytest.mark.parametrize(("path", "prefix", "replacement", "expected"), REPLACE_PREFIX_MATCH)
async def test_redirect_replace_prefix_match_table(
    echo_factory, gateway_factory, free_port: int, path, prefix, replacement, expected
) -> None:
    spec = f"{{path: {{type: ReplacePrefixMatch, replacePrefixMatch: {replacement!r}}}}}"
    routes = route_doc("redirect", _redirect(prefix, spec))
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        response = await dep.client.get(path)
    assert (response.status_code, urlsplit(response.headers["location"]).path) == (302, expected)


@pytest.mark.parametrize(
    ("path", "status", "location"),
    [("/keep-host/x?q=1", 302, b"location: /keep-host/x?q=1"), ("/http-nil", 400, None)],
)
async def test_redirect_of_a_request_without_host(
    echo_factory, gateway_factory, free_port: int, path: str, status: int, location
) -> None:
    """HTTP/1.0 may omit Host: never a Location with an empty host (``http://:port/``)."""
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES):
        data, _ = await raw_request(free_port, f"GET {path} HTTP/1.0\r\n\r\n".encode(), 3)
    head = data.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0].startswith(b"HTTP/1.1 %d " % status)
    assert [line.lower() for line in head if line.lower().startswith(b"location:")] == (
        [location] if location else []
    )
