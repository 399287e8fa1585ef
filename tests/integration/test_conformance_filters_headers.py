"""Conformance: RequestHeaderModifier and ResponseHeaderModifier, rule and backendRef level.

What the backend saw (the echo's ``headers``) and what the client got (research note §1.5.1, §3.4).
"""

from __future__ import annotations

import httpx
import pytest

from tests.fixtures.conformance import backend_of, deploy, route_doc


def _values(headers: httpx.Headers | dict[str, str], name: str) -> list[str] | None:
    """A header's values, whether sent as one comma-joined line or several; None when absent."""
    if isinstance(headers, httpx.Headers):
        lines = headers.get_list(name)
    else:
        lines = [headers[name]] if name in headers else []
    values = [value.strip() for line in lines for value in line.split(",")]
    return values or None


def _modifier_rule(path: str, kind: str, spec: str, backend: str = "v1") -> str:
    field = "requestHeaderModifier" if kind == "Request" else "responseHeaderModifier"
    return f"""
- matches: [{{path: {{type: PathPrefix, value: {path}}}}}]
  filters:
    - type: {kind}HeaderModifier
      {field}: {spec}
  backendRefs: [{{name: {backend}, port: 80}}]
"""


REQUEST_ROUTES = route_doc(
    "request-header-modifier",
    _modifier_rule("/set", "Request", "{set: [{name: X-Header-Set, value: set-overwrites-values}]}")
    + _modifier_rule("/add", "Request", "{add: [{name: X-Header-Add, value: add-appends-values}]}")
    + _modifier_rule("/remove", "Request", "{remove: [X-Header-Remove]}")
    + _modifier_rule(
        "/multiple",
        "Request",
        "{set: [{name: X-Header-Set-1, value: header-set-1}, {name: X-Header-Set-2, value: "
        "header-set-2}], add: [{name: X-Header-Add-1, value: header-add-1}, {name: "
        "X-Header-Add-2, value: header-add-2}], remove: [X-Header-Remove-1, X-Header-Remove-2]}",
    )
    + _modifier_rule(
        "/case-insensitivity",
        "Request",
        "{set: [{name: X-Header-Set, value: header-set}], add: [{name: X-Header-Add, value: "
        "header-add}], remove: [X-Header-Remove]}",
    ),
)


@pytest.mark.parametrize(
    ("path", "sent", "expected", "absent"),
    [
        ("/set", {"Some-Other-Header": "val"}, {"x-header-set": ["set-overwrites-values"]}, []),
        (
            "/set",
            {"X-Header-Set": "some-other-value"},
            {"x-header-set": ["set-overwrites-values"]},
            [],
        ),
        ("/add", {}, {"x-header-add": ["add-appends-values"]}, []),
        (
            "/add",
            {"X-Header-Add": "some-other-value"},
            {"x-header-add": ["some-other-value", "add-appends-values"]},
            [],
        ),
        (
            "/remove",
            {"X-Header-Remove": "val", "Keep": "kept"},
            {"keep": ["kept"]},
            ["x-header-remove"],
        ),
        (
            "/multiple",
            {
                "X-Header-Set-2": "set-val-2",
                "X-Header-Add-2": "add-val-2",
                "X-Header-Remove-2": "x",
            },
            {
                "x-header-set-1": ["header-set-1"],
                "x-header-set-2": ["header-set-2"],
                "x-header-add-1": ["header-add-1"],
                "x-header-add-2": ["add-val-2", "header-add-2"],
            },
            ["x-header-remove-1", "x-header-remove-2"],
        ),
        (
            "/case-insensitivity",
            {
                "x-header-set": "original-val-set",
                "x-header-add": "original-val-add",
                "x-header-remove": "original-val-remove",
            },
            {"x-header-set": ["header-set"], "x-header-add": ["original-val-add", "header-add"]},
            ["x-header-remove"],
        ),
    ],
)
async def test_request_header_modifier(
    echo_factory, gateway_factory, free_port: int, path: str, sent, expected, absent
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, REQUEST_ROUTES) as dep:
        response = await dep.client.get(path, headers=sent)
    seen = response.json()["headers"]
    assert {name: _values(seen, name) for name in expected} == expected
    assert [name for name in absent if name in seen] == []


RESPONSE_ROUTES = route_doc(
    "response-header-modifier",
    _modifier_rule("/set", "Response", "{set: [{name: X-Echo-Backend, value: overwritten}]}")
    + _modifier_rule(
        "/add",
        "Response",
        "{add: [{name: x-echo-backend, value: added}, {name: x-lowercase-add, value: a}, "
        "{name: x-Mixedcase-ADD-1, value: b}, {name: X-mixeDcase-add-2, value: c}, "
        "{name: X-UPPERCASE-ADD, value: d}]}",
    )
    + _modifier_rule("/remove", "Response", "{remove: [Content-Type]}")
    + """
- matches: [{path: {type: PathPrefix, value: /both}}]
  filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: X-Req, value: req}]}
    - type: ResponseHeaderModifier
      responseHeaderModifier: {set: [{name: X-Resp, value: resp}]}
  backendRefs: [{name: v1, port: 80}]
""",
)


@pytest.mark.parametrize(
    ("path", "expected", "absent"),
    [
        ("/set", {"x-echo-backend": ["overwritten"]}, []),
        (
            "/add",
            {
                "x-echo-backend": ["v1", "added"],
                "x-lowercase-add": ["a"],
                "x-mixedcase-add-1": ["b"],
                "x-mixedcase-add-2": ["c"],
                "x-uppercase-add": ["d"],
            },
            [],
        ),
        ("/remove", {"x-echo-backend": ["v1"]}, ["content-type"]),
        ("/both", {"x-resp": ["resp"]}, ["x-req"]),
    ],
)
async def test_response_header_modifier(
    echo_factory, gateway_factory, free_port: int, path: str, expected, absent
) -> None:
    async with deploy(echo_factory, gateway_factory, free_port, RESPONSE_ROUTES) as dep:
        response = await dep.client.get(path)
    assert response.status_code == 200
    assert {name: _values(response.headers, name) for name in expected} == expected
    assert [name for name in absent if name in response.headers] == []
    if path == "/both":  # request and response modifiers in one rule apply independently
        assert _values(response.json()["headers"], "x-req") == ["req"]
        assert "x-resp" not in response.json()["headers"]


def _backend_with_filters(name: str) -> str:
    return f"""
      - name: {name}
        port: 80
        filters:
          - type: RequestHeaderModifier
            requestHeaderModifier: {{set: [{{name: Backend, value: {name}}}]}}
          - type: ResponseHeaderModifier
            responseHeaderModifier: {{add: [{{name: X-Served-By, value: {name}}}]}}"""


async def test_backend_level_header_modifiers_follow_the_chosen_backend(
    echo_factory, gateway_factory, free_port: int
) -> None:
    routes = route_doc(
        "backend-weights",
        "- backendRefs:" + _backend_with_filters("v1") + _backend_with_filters("v2") + "\n",
    )
    async with deploy(echo_factory, gateway_factory, free_port, routes) as dep:
        served = []
        for _ in range(20):
            response = await dep.client.get("/")
            name = backend_of(response)
            assert _values(response.json()["headers"], "backend") == [name]
            assert _values(response.headers, "x-served-by") == [name]
            served.append(name)
    assert set(served) == {"v1", "v2"}
