"""Conformance: the CORS filter, preflight and actual requests (research note §1.5.5, §3.4)."""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.conformance import backend_of, deploy, route_doc


def _cors_rule(prefix: str, spec: str) -> str:
    return f"""
- matches: [{{path: {{type: PathPrefix, value: {prefix}}}}}]
  filters:
    - type: CORS
      cors: {spec}
  backendRefs: [{{name: v1, port: 80}}]
"""


ROUTES = route_doc(
    "cors",
    _cors_rule(
        "/cors-1",
        "{allowOrigins: ['https://www.foo.com', 'https://*.bar.com'], allowMethods: [GET, OPTIONS],"
        " allowHeaders: [x-header-1, x-header-2], exposeHeaders: [x-header-3, x-header-4],"
        " allowCredentials: true, maxAge: 3600}",
    )
    + _cors_rule(
        "/cors-2",
        "{allowOrigins: ['https://www.foo.com'], allowMethods: ['*'], allowHeaders: [x-header-1]}",
    )
    + _cors_rule(
        "/cors-wildcard-origin",
        "{allowOrigins: ['*'], allowMethods: [PUT], allowCredentials: false}",
    )
    + _cors_rule(
        "/cors-wildcard-methods-headers",
        "{allowOrigins: ['*'], allowMethods: ['*'], allowHeaders: ['*'], exposeHeaders: ['*'],"
        " allowCredentials: true}",
    ),
)


def _list(response: httpx.Response, name: str) -> set[str] | None:
    """A comma-list header as a set (order and whitespace ignored); None when absent."""
    value = response.headers.get(name)
    return None if value is None else {item.strip().lower() for item in value.split(",")}


def _preflight(origin: str, method: str = "GET", headers: str = "x-header-1") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


@pytest.mark.parametrize(
    "origin",
    [
        "https://www.foo.com",
        "https://www.bar.com",
        "https://xpto.www.bar.com",
        "https://www.foo.com:443",  # the implied port, written out
    ],
)
async def test_preflight_allowed_origin(
    echo_factory, gateway_factory, free_port: int, origin: str
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.options("/cors-1", headers=_preflight(origin))
    assert response.status_code in (200, 204)
    assert backend_of(response) is None  # answered by the gateway
    assert response.headers["access-control-allow-origin"] == origin
    assert _list(response, "access-control-allow-methods") == {"get", "options"}
    assert _list(response, "access-control-allow-headers") == {"x-header-1", "x-header-2"}
    assert _list(response, "access-control-expose-headers") == {"x-header-3", "x-header-4"}
    assert response.headers["access-control-max-age"] == "3600"
    assert response.headers["access-control-allow-credentials"] == "true"


@pytest.mark.parametrize(
    "origin",
    [
        "https://foobar.com",
        "http://www.foo.com",  # another scheme
        "https://bar.com",  # "*.bar.com" needs a label in front
        "https://evilbar.com",
        "https://www.foo.com:8443",  # another port
        "null",
    ],
)
async def test_preflight_disallowed_origin(
    echo_factory, gateway_factory, free_port: int, origin: str
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.options("/cors-1", headers=_preflight(origin))
    assert response.status_code in (200, 204, 403)
    assert [h for h in response.headers if h.startswith("access-control-")] == []


async def test_preflight_wildcard_methods_without_credentials(
    echo_factory, gateway_factory, free_port: int
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.options(
            "/cors-2", headers=_preflight("https://www.foo.com", "POST")
        )
    assert response.status_code in (200, 204)
    assert _list(response, "access-control-allow-methods") in ({"post"}, {"*"})
    assert "access-control-allow-credentials" not in response.headers
    assert response.headers["access-control-max-age"] == "5"  # the default


@pytest.mark.parametrize("origin", ["https://foobar.com", "https://foobar.com:12345"])
async def test_preflight_wildcard_origin(
    echo_factory, gateway_factory, free_port: int, origin: str
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.options(
            "/cors-wildcard-origin", headers=_preflight(origin, "PUT")
        )
    assert response.status_code in (200, 204)
    assert response.headers["access-control-allow-origin"] in ("*", origin)
    assert "access-control-allow-credentials" not in response.headers


async def test_preflight_wildcards_with_credentials_echo_the_request(
    echo_factory, gateway_factory, free_port: int
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.options(
            "/cors-wildcard-methods-headers",
            headers=_preflight("https://other.foo.com", "PUT", "x-header-1, x-header-2"),
        )
        unrelated = await dep.client.get("/cors-wildcard-methods-headers-unauth")
    assert response.status_code in (200, 204)
    assert response.headers["access-control-allow-origin"] == "https://other.foo.com"
    assert _list(response, "access-control-allow-methods") == {"put"}
    assert _list(response, "access-control-allow-headers") == {"x-header-1", "x-header-2"}
    assert response.headers["access-control-allow-credentials"] == "true"
    assert unrelated.status_code == 404  # element-wise prefix: a longer element is no match


@pytest.mark.parametrize(
    ("path", "origin", "allow_origin", "credentials"),
    [
        ("/cors-1", "https://www.bar.com", "https://www.bar.com", "true"),
        ("/cors-1", "https://foobar.com", None, None),
        ("/cors-wildcard-origin", "https://foobar.com", "*", None),
        ("/cors-wildcard-methods-headers", "https://a.b", "https://a.b", "true"),
    ],
)
async def test_actual_request_is_forwarded_with_cors_headers(
    echo_factory, gateway_factory, free_port: int, path, origin, allow_origin, credentials
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.get(path + "?q=1", headers={"Origin": origin})
    assert (response.status_code, backend_of(response)) == (200, "v1")
    assert response.json()["path"] == path + "?q=1"
    if allow_origin == "*":
        assert response.headers["access-control-allow-origin"] in ("*", origin)
    else:
        assert response.headers.get("access-control-allow-origin") == allow_origin
    assert response.headers.get("access-control-allow-credentials") == credentials
    if allow_origin is not None and path == "/cors-1":
        assert _list(response, "access-control-expose-headers") == {"x-header-3", "x-header-4"}


async def test_options_without_preflight_headers_reaches_the_backend(
    echo_factory, gateway_factory, free_port: int
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, ROUTES) as dep:
        response = await dep.client.options("/cors-1", headers={"Origin": "https://www.foo.com"})
    assert (response.status_code, backend_of(response)) == (200, "v1")
    assert response.json()["method"] == "OPTIONS"
