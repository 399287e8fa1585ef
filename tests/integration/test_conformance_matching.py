"""Conformance: HTTPRoute path, header, query and method matching over real sockets.

Each table is the upstream conformance test of the same name (research note §2.4): the routes
below are its manifest, each case a request it sends and the backend (or 404) it expects.
"""

from __future__ import annotations

import pytest

from tests.fixtures.conformance import backend_of, deploy, route_doc

V1, V2, V3 = ("{name: v1, port: 80}", "{name: v2, port: 80}", "{name: v3, port: 80}")

Case = tuple[str, str, dict[str, str], str | int]


async def _check(echo_factory, gateway_factory, port: int, routes: str, case: Case) -> None:
    method, path, headers, expected = case
    async with deploy(echo_factory, gateway_factory, port, routes) as dep:
        response = await dep.client.request(method, path, headers=headers)
    if isinstance(expected, int):
        assert (response.status_code, backend_of(response)) == (expected, None)
    else:
        assert (response.status_code, backend_of(response)) == (200, expected)
        assert response.json()["path"] == path  # the query string reaches the backend unchanged


def _q(name: str, value: str) -> str:
    return f"{{name: {name}, value: {value}}}"


HTTP_ROUTE_MATCHING = route_doc(
    "matching",
    f"""
- matches:
    - {{path: {{type: PathPrefix, value: /}}}}
    - {{headers: [{{name: version, value: one}}]}}
  backendRefs: [{V1}]
- matches:
    - {{path: {{type: PathPrefix, value: /v2}}}}
    - {{headers: [{{name: version, value: two}}]}}
  backendRefs: [{V2}]
""",
)


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/", {}, "v1"),
        ("GET", "/example", {}, "v1"),
        ("GET", "/", {"Version": "one"}, "v1"),
        ("GET", "/v2", {}, "v2"),
        ("GET", "/v2/", {}, "v2"),
        ("GET", "/v2/example", {}, "v2"),
        ("GET", "/", {"Version": "two"}, "v2"),
        ("GET", "/v2example", {}, "v1"),
        ("GET", "/foo/v2/example", {}, "v1"),
    ],
)
async def test_httproute_matching(echo_factory, gateway_factory, free_port: int, case) -> None:
    await _check(echo_factory, gateway_factory, free_port, HTTP_ROUTE_MATCHING, case)


EXACT_PATH = route_doc(
    "exact",
    f"""
- matches: [{{path: {{type: Exact, value: /one}}}}]
  backendRefs: [{V1}]
- matches: [{{path: {{type: Exact, value: /two}}}}]
  backendRefs: [{V2}]
""",
)


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/one", {}, "v1"),
        ("GET", "/two", {}, "v2"),
        ("GET", "/one?x=1", {}, "v1"),
        ("GET", "/", {}, 404),
        ("GET", "/one/example", {}, 404),
        ("GET", "/two/", {}, 404),
        ("GET", "/Two", {}, 404),
    ],
)
async def test_exact_path_matching(echo_factory, gateway_factory, free_port: int, case) -> None:
    await _check(echo_factory, gateway_factory, free_port, EXACT_PATH, case)


PATH_MATCH_ORDER = route_doc(
    "order",
    f"""
- matches: [{{path: {{type: Exact, value: /match}}}}]
  backendRefs: [{V1}]
- matches: [{{path: {{type: Exact, value: /match/exact}}}}]
  backendRefs: [{V2}]
- matches: [{{path: {{type: Exact, value: /match/exact/one}}}}]
  backendRefs: [{V3}]
- matches: [{{path: {{type: PathPrefix, value: /match/}}}}]
  backendRefs: [{V3}]
- matches: [{{path: {{type: PathPrefix, value: /match/prefix/}}}}]
  backendRefs: [{V1}]
- matches: [{{path: {{type: PathPrefix, value: /match/prefix/one}}}}]
  backendRefs: [{V2}]
""",
)


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/match/exact/one", {}, "v3"),
        ("GET", "/match/exact", {}, "v2"),
        ("GET", "/match", {}, "v1"),
        ("GET", "/match/prefix/one/any", {}, "v2"),
        ("GET", "/match/prefix/any", {}, "v1"),
        ("GET", "/match/any", {}, "v3"),
        ("GET", "/matchany", {}, 404),
    ],
)
async def test_path_match_order(echo_factory, gateway_factory, free_port: int, case) -> None:
    await _check(echo_factory, gateway_factory, free_port, PATH_MATCH_ORDER, case)


HEADER_MATCHING = route_doc(
    "headers",
    f"""
- matches: [{{headers: [{{name: version, value: one}}]}}]
  backendRefs: [{V1}]
- matches: [{{headers: [{{name: version, value: two}}]}}]
  backendRefs: [{V2}]
- matches: [{{headers: [{{name: version, value: two}}, {{name: color, value: orange}}]}}]
  backendRefs: [{V1}]
- matches: [{{headers: [{_q("color", "blue")}]}}, {{headers: [{_q("color", "green")}]}}]
  backendRefs: [{V1}]
- matches: [{{headers: [{_q("color", "red")}]}}, {{headers: [{_q("color", "yellow")}]}}]
  backendRefs: [{V2}]
- matches: [{{headers: [{{name: x-regex, type: RegularExpression, value: "v[0-9]+"}}]}}]
  backendRefs: [{V3}]
""",
)


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/", {"Version": "one"}, "v1"),
        ("GET", "/", {"VERSION": "two"}, "v2"),
        ("GET", "/", {"Version": "two", "Color": "orange"}, "v1"),
        ("GET", "/", {"Version": "two", "Color": "blue"}, "v2"),
        ("GET", "/", {"Color": "blue"}, "v1"),
        ("GET", "/", {"color": "green"}, "v1"),
        ("GET", "/", {"Color": "red"}, "v2"),
        ("GET", "/", {"Color": "yellow"}, "v2"),
        ("GET", "/", {"Color": "orange"}, 404),
        ("GET", "/", {"Color": "purple"}, 404),
        ("GET", "/", {"Some-Other-Header": "one"}, 404),
        ("GET", "/", {"Version": "One"}, 404),  # values are case-sensitive
        ("GET", "/", {"X-Regex": "v42"}, "v3"),
        ("GET", "/", {"X-Regex": "v42x"}, 404),  # regular expressions match the whole value
    ],
)
async def test_header_matching(echo_factory, gateway_factory, free_port: int, case) -> None:
    await _check(echo_factory, gateway_factory, free_port, HEADER_MATCHING, case)


QUERY_MATCHING = route_doc(
    "query",
    f"""
- matches: [{{queryParams: [{_q("animal", "whale")}]}}]
  backendRefs: [{V1}]
- matches: [{{queryParams: [{_q("animal", "dolphin")}]}}]
  backendRefs: [{V2}]
- matches:
    - {{queryParams: [{_q("animal", "dolphin")}, {_q("color", "blue")}]}}
    - {{queryParams: [{_q("ANIMAL", "Whale")}]}}
  backendRefs: [{V3}]
- matches: [{{path: {{type: PathPrefix, value: /path1}}, queryParams: [{_q("animal", "whale")}]}}]
  backendRefs: [{V1}]
- matches: [{{headers: [{_q("version", "one")}], queryParams: [{_q("animal", "whale")}]}}]
  backendRefs: [{V2}]
- matches:
    - path: {{type: PathPrefix, value: /path2}}
      headers: [{_q("version", "two")}]
      queryParams: [{_q("animal", "whale")}]
  backendRefs: [{V3}]
- matches:
    - {{path: {{type: PathPrefix, value: /path3}}, queryParams: [{_q("animal", "shark")}]}}
    - path: {{type: PathPrefix, value: /path4}}
      headers: [{_q("version", "three")}]
      queryParams: [{_q("animal", "kraken")}]
  backendRefs: [{V1}]
- matches: [{{path: {{type: PathPrefix, value: /path5}}}}]
  backendRefs: [{V1}]
- matches: [{{queryParams: [{_q("animal", "hydra")}]}}]
  backendRefs: [{V2}]
- matches: [{{headers: [{_q("version", "four")}]}}]
  backendRefs: [{V3}]
""",
)


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/?animal=whale", {}, "v1"),
        ("GET", "/?animal=dolphin", {}, "v2"),
        ("GET", "/?animal=dolphin&color=blue", {}, "v3"),
        ("GET", "/?ANIMAL=Whale", {}, "v3"),
        ("GET", "/?animal=whale&otherparam=irrelevant", {}, "v1"),
        ("GET", "/?animal=dolphin&color=yellow", {}, "v2"),
        ("GET", "/?color=blue", {}, 404),
        ("GET", "/?animal=dog", {}, 404),
        ("GET", "/?animal=whaledolphin", {}, 404),
        ("GET", "/", {}, 404),
        ("GET", "/path1?animal=whale", {}, "v1"),
        ("GET", "/?animal=whale", {"version": "one"}, "v2"),
        ("GET", "/path2?animal=whale", {"version": "two"}, "v3"),
        ("GET", "/path3?animal=shark", {}, "v1"),
        ("GET", "/path4?animal=kraken", {"version": "three"}, "v1"),
        ("GET", "/?animal=shark", {}, 404),
        ("GET", "/path4?animal=kraken", {}, 404),
        ("GET", "/path5?animal=hydra", {}, "v1"),
        ("GET", "/?animal=hydra", {"version": "four"}, "v3"),
    ],
)
async def test_query_param_matching(echo_factory, gateway_factory, free_port: int, case) -> None:
    await _check(echo_factory, gateway_factory, free_port, QUERY_MATCHING, case)


METHOD_MATCHING = route_doc(
    "method",
    f"""
- matches: [{{method: POST}}]
  backendRefs: [{V1}]
- matches: [{{method: GET}}]
  backendRefs: [{V2}]
- matches: [{{path: {{type: PathPrefix, value: /path1}}, method: GET}}]
  backendRefs: [{V1}]
- matches: [{{headers: [{_q("version", "one")}], method: PUT}}]
  backendRefs: [{V2}]
- matches:
    - path: {{type: PathPrefix, value: /path2}}
      headers: [{_q("version", "two")}]
      method: POST
  backendRefs: [{V3}]
- matches:
    - {{path: {{type: PathPrefix, value: /path3}}, method: PATCH}}
    - path: {{type: PathPrefix, value: /path4}}
      headers: [{_q("version", "three")}]
      method: DELETE
  backendRefs: [{V1}]
- matches: [{{path: {{type: PathPrefix, value: /path5}}}}]
  backendRefs: [{V1}]
- matches: [{{method: PATCH}}]
  backendRefs: [{V2}]
- matches: [{{headers: [{_q("version", "four")}]}}]
  backendRefs: [{V3}]
""",
)


@pytest.mark.parametrize(
    "case",
    [
        ("POST", "/", {}, "v1"),
        ("GET", "/", {}, "v2"),
        ("HEAD", "/", {}, 404),
        ("GET", "/path1", {}, "v1"),
        ("PUT", "/", {"version": "one"}, "v2"),
        ("POST", "/path2", {"version": "two"}, "v3"),
        ("PATCH", "/path3", {}, "v1"),
        ("DELETE", "/path4", {"version": "three"}, "v1"),
        ("PUT", "/", {}, 404),
        ("DELETE", "/path4", {}, 404),
        ("PATCH", "/path5", {}, "v1"),
        ("PATCH", "/", {"version": "four"}, "v2"),
    ],
)
async def test_method_matching(echo_factory, gateway_factory, free_port: int, case) -> None:
    await _check(echo_factory, gateway_factory, free_port, METHOD_MATCHING, case)


ACROSS_ROUTES = route_doc(
    "part1",
    f"""
- matches: [{{path: {{type: PathPrefix, value: /}}}}, {{headers: [{_q("version", "one")}]}}]
  backendRefs: [{V1}]
""",
    hostnames=["example.com", "example.net"],
) + route_doc(
    "part2",
    f"""
- matches: [{{path: {{type: PathPrefix, value: /v2}}}}, {{headers: [{_q("version", "two")}]}}]
  backendRefs: [{V2}]
""",
    hostnames=["example.com"],
)


@pytest.mark.parametrize(
    ("host", "path", "headers", "expected"),
    [
        ("example.com", "/", {}, "v1"),
        ("example.net", "/", {}, "v1"),
        ("example.net", "/v2", {}, "v1"),
        ("example.com", "/v2", {}, "v2"),
        ("example.com", "/", {"Version": "two"}, "v2"),
        ("example.com", "/v2", {"Version": "one"}, "v2"),
        ("example.org", "/", {}, 404),
    ],
)
async def test_matching_across_routes(
    echo_factory, gateway_factory, free_port: int, host, path, headers, expected
) -> None:
    await _check(
        echo_factory,
        gateway_factory,
        free_port,
        ACROSS_ROUTES,
        ("GET", path, {"Host": host, **headers}, expected),
    )


PATH_FORMS = route_doc(
    "forms",
    f"""
- matches: [{{path: {{type: PathPrefix, value: /trailing/}}}}]
  backendRefs: [{V1}]
- matches: [{{path: {{type: RegularExpression, value: "/re/[a-z]+"}}}}]
  backendRefs: [{V2}]
- matches: [{{queryParams: [{{name: animal, value: whale}}]}}]
  backendRefs: [{V3}]
- matches: [{{path: {{type: RegularExpression, value: "/alt/one|/alt/two"}}}}]
  backendRefs: [{V1}]
- matches: [{{headers: [{{name: x-alt, type: RegularExpression, value: "one|two"}}]}}]
  backendRefs: [{V2}]
""",
)


@pytest.mark.parametrize(
    "case",
    [
        ("GET", "/trailing", {}, "v1"),  # a trailing "/" in the prefix is ignored
        ("GET", "/trailing/", {}, "v1"),
        ("GET", "/trailing/x?y=1", {}, "v1"),
        ("GET", "/trailingx", {}, 404),
        ("GET", "/re/abc", {}, "v2"),
        ("GET", "/re/abc?q=1", {}, "v2"),  # the query is not part of the path
        ("GET", "/re/abc/def", {}, 404),  # full match, not a search
        ("GET", "/x/re/abc", {}, 404),
        ("GET", "/?animal=whale&animal=dolphin", {}, "v3"),  # the first value counts
        ("GET", "/?animal=dolphin&animal=whale", {}, 404),
        ("GET", "/?color=x&animal=whale", {}, "v3"),
        # Alternations are anchored as a whole, not per branch.
        ("GET", "/alt/two", {}, "v1"),
        ("GET", "/alt/one/x", {}, 404),
        ("GET", "/x/alt/two", {}, 404),
        ("GET", "/", {"X-Alt": "two"}, "v2"),
        ("GET", "/", {"X-Alt": "onex"}, 404),
        ("GET", "/", {"X-Alt": "xtwo"}, 404),
    ],
)
async def test_path_forms_and_repeated_query(
    echo_factory, gateway_factory, free_port: int, case
) -> None:
    await _check(echo_factory, gateway_factory, free_port, PATH_FORMS, case)


@pytest.mark.parametrize("matches", ["", "matches: []\n  "])
@pytest.mark.parametrize("path", ["/", "/any/path?x=1"])
async def test_rule_without_matches_matches_every_request(
    echo_factory, gateway_factory, free_port: int, matches: str, path: str
) -> None:
    """HTTPRouteSimpleSameNamespace: "If no matches are specified" - omitted or empty - "/"."""
    routes = route_doc("match-all", f"- {matches}backendRefs: [{V1}]")
    await _check(echo_factory, gateway_factory, free_port, routes, ("POST", path, {}, "v1"))
