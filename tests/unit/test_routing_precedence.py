"""The conformance suite's matching and precedence cases (research note §2.4): YAML -> router."""

from __future__ import annotations

import pytest

from tests.fixtures.route_config import compile_yaml, head, route_yaml, served_by

HTTP_ROUTE_MATCHING = compile_yaml(
    route_yaml(
        "matching",
        """
        - matches:
          - path: {type: PathPrefix, value: /}
          - headers: [{name: version, value: one}]
          backendRefs: [{name: v1, port: 8080}]
        - matches:
          - path: {type: PathPrefix, value: /v2}
          - headers: [{name: version, value: two}]
          backendRefs: [{name: v2, port: 8080}]
        """,
    )
)


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/", {}, "v1"),
        ("/example", {}, "v1"),
        ("/", {"Version": "one"}, "v1"),
        ("/v2", {}, "v2"),
        ("/v2/", {}, "v2"),
        ("/v2/example", {}, "v2"),
        ("/", {"Version": "two"}, "v2"),
        ("/v2example", {}, "v1"),
        ("/foo/v2/example", {}, "v1"),
    ],
)
def test_httproute_matching(path: str, headers: dict[str, str], expected: str) -> None:
    assert served_by(HTTP_ROUTE_MATCHING, head(path, headers=headers)) == expected


EXACT = compile_yaml(
    route_yaml(
        "exact",
        """
        - matches: [{path: {type: Exact, value: /one}}]
          backendRefs: [{name: v1, port: 8080}]
        - matches: [{path: {type: Exact, value: /two}}]
          backendRefs: [{name: v2, port: 8080}]
        """,
    )
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/one", "v1"),
        ("/two", "v2"),
        ("/", None),
        ("/one/example", None),
        ("/two/", None),
        ("/Two", None),
    ],
)
def test_exact_path_matching(path: str, expected: str | None) -> None:
    assert served_by(EXACT, head(path)) == expected


PATH_ORDER = compile_yaml(
    route_yaml(
        "order",
        """
        - matches: [{path: {type: Exact, value: /match}}]
          backendRefs: [{name: v1, port: 8080}]
        - matches: [{path: {type: Exact, value: /match/exact}}]
          backendRefs: [{name: v2, port: 8080}]
        - matches: [{path: {type: Exact, value: /match/exact/one}}]
          backendRefs: [{name: v3, port: 8080}]
        - matches: [{path: {type: PathPrefix, value: /match/}}]
          backendRefs: [{name: v3, port: 8080}]
        - matches: [{path: {type: PathPrefix, value: /match/prefix/}}]
          backendRefs: [{name: v1, port: 8080}]
        - matches: [{path: {type: PathPrefix, value: /match/prefix/one}}]
          backendRefs: [{name: v2, port: 8080}]
        """,
    )
)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/match/exact/one", "v3"),
        ("/match/exact", "v2"),
        ("/match", "v1"),
        ("/match/prefix/one/any", "v2"),
        ("/match/prefix/any", "v1"),
        ("/match/any", "v3"),
    ],
)
def test_path_match_order(path: str, expected: str) -> None:
    assert served_by(PATH_ORDER, head(path)) == expected


HEADERS = compile_yaml(
    route_yaml(
        "headers",
        """
        - matches: [{headers: [{name: version, value: one}]}]
          backendRefs: [{name: v1, port: 8080}]
        - matches: [{headers: [{name: version, value: two}]}]
          backendRefs: [{name: v2, port: 8080}]
        - matches: [{headers: [{name: version, value: two}, {name: color, value: orange}]}]
          backendRefs: [{name: v1, port: 8080}]
        - matches:
          - headers: [{name: color, value: blue}]
          - headers: [{name: color, value: green}]
          backendRefs: [{name: v1, port: 8080}]
        - matches:
          - headers: [{name: color, value: red}]
          - headers: [{name: color, value: yellow}]
          backendRefs: [{name: v2, port: 8080}]
        """,
    )
)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Version": "one"}, "v1"),
        ({"Version": "two"}, "v2"),
        ({"Version": "two", "Color": "orange"}, "v1"),
        ({"Version": "two", "Color": "blue"}, "v2"),
        ({"Color": "blue"}, "v1"),
        ({"Color": "green"}, "v1"),
        ({"Color": "red"}, "v2"),
        ({"Color": "yellow"}, "v2"),
        ({"Color": "orange"}, None),
        ({"Color": "purple"}, None),
        ({"Some-Other-Header": "one"}, None),
        ({"VERSION": "one"}, "v1"),
    ],
)
def test_header_matching(headers: dict[str, str], expected: str | None) -> None:
    assert served_by(HEADERS, head("/", headers=headers)) == expected


QUERY = compile_yaml(
    route_yaml(
        "query",
        """
        - matches: [{queryParams: [{name: animal, value: whale}]}]
          backendRefs: [{name: v1, port: 8080}]
        - matches: [{queryParams: [{name: animal, value: dolphin}]}]
          backendRefs: [{name: v2, port: 8080}]
        - matches:
          - queryParams: [{name: animal, value: dolphin}, {name: color, value: blue}]
          - queryParams: [{name: ANIMAL, value: Whale}]
          backendRefs: [{name: v3, port: 8080}]
        - matches:
          - path: {type: PathPrefix, value: /path1}
            queryParams: [{name: animal, value: whale}]
          backendRefs: [{name: v1, port: 8080}]
        - matches:
          - headers: [{name: version, value: one}]
            queryParams: [{name: animal, value: whale}]
          backendRefs: [{name: v2, port: 8080}]
        - matches:
          - path: {type: PathPrefix, value: /path2}
            headers: [{name: version, value: two}]
            queryParams: [{name: animal, value: whale}]
          backendRefs: [{name: v3, port: 8080}]
        - matches:
          - path: {type: PathPrefix, value: /path3}
            queryParams: [{name: animal, value: shark}]
          - path: {type: PathPrefix, value: /path4}
            headers: [{name: version, value: three}]
            queryParams: [{name: animal, value: kraken}]
          backendRefs: [{name: v1, port: 8080}]
        - matches:
          - path: {type: PathPrefix, value: /path5}
          backendRefs: [{name: v1, port: 8080}]
        - matches:
          - queryParams: [{name: animal, value: hydra}]
          backendRefs: [{name: v2, port: 8080}]
        - matches:
          - headers: [{name: version, value: four}]
          backendRefs: [{name: v3, port: 8080}]
        """,
    )
)


@pytest.mark.parametrize(
    ("path", "headers", "expected"),
    [
        ("/?animal=whale", {}, "v1"),
        ("/?animal=dolphin", {}, "v2"),
        ("/?animal=dolphin&color=blue", {}, "v3"),
        ("/?ANIMAL=Whale", {}, "v3"),
        ("/?animal=whale&otherparam=irrelevant", {}, "v1"),
        ("/?animal=dolphin&color=yellow", {}, "v2"),
        ("/?color=blue", {}, None),
        ("/?animal=dog", {}, None),
        ("/?animal=whaledolphin", {}, None),
        ("/", {}, None),
        ("/path1?animal=whale", {}, "v1"),
        ("/?animal=whale", {"version": "one"}, "v2"),
        ("/path2?animal=whale", {"version": "two"}, "v3"),
        ("/path3?animal=shark", {}, "v1"),
        ("/path4?animal=kraken", {"version": "three"}, "v1"),
        ("/?animal=shark", {}, None),
        ("/path4?animal=kraken", {}, None),
        ("/path5?animal=hydra", {}, "v1"),
        ("/?animal=hydra", {"version": "four"}, "v3"),
    ],
)
def test_query_param_matching(path: str, headers: dict[str, str], expected: str | None) -> None:
    assert served_by(QUERY, head(path, headers=headers)) == expected


METHODS = compile_yaml(
    route_yaml(
        "methods",
        """
        - matches: [{method: POST}]
          backendRefs: [{name: v1, port: 8080}]
        - matches: [{method: GET}]
          backendRefs: [{name: v2, port: 8080}]
        - matches:
          - {path: {type: PathPrefix, value: /path1}, method: GET}
          backendRefs: [{name: v1, port: 8080}]
        - matches:
          - {headers: [{name: version, value: one}], method: PUT}
          backendRefs: [{name: v2, port: 8080}]
        - matches:
          - path: {type: PathPrefix, value: /path2}
            headers: [{name: version, value: two}]
            method: POST
          backendRefs: [{name: v3, port: 8080}]
        - matches:
          - {path: {type: PathPrefix, value: /path3}, method: PATCH}
          - path: {type: PathPrefix, value: /path4}
            headers: [{name: version, value: three}]
            method: DELETE
          backendRefs: [{name: v1, port: 8080}]
        - matches:
          - {path: {type: PathPrefix, value: /path5}}
          backendRefs: [{name: v1, port: 8080}]
        - matches:
          - {method: PATCH}
          backendRefs: [{name: v2, port: 8080}]
        - matches:
          - {headers: [{name: version, value: four}]}
          backendRefs: [{name: v3, port: 8080}]
        """,
    )
)


@pytest.mark.parametrize(
    ("method", "path", "headers", "expected"),
    [
        ("POST", "/", {}, "v1"),
        ("GET", "/", {}, "v2"),
        ("HEAD", "/", {}, None),
        ("GET", "/path1", {}, "v1"),
        ("PUT", "/", {"version": "one"}, "v2"),
        ("POST", "/path2", {"version": "two"}, "v3"),
        ("PATCH", "/path3", {}, "v1"),
        ("DELETE", "/path4", {"version": "three"}, "v1"),
        ("PUT", "/", {}, None),
        ("DELETE", "/path4", {}, None),
        ("PATCH", "/path5", {}, "v1"),
        ("PATCH", "/", {"version": "four"}, "v2"),
    ],
)
def test_method_matching(
    method: str, path: str, headers: dict[str, str], expected: str | None
) -> None:
    assert served_by(METHODS, head(path, method=method, headers=headers)) == expected


ACROSS_ROUTES = compile_yaml(
    route_yaml(
        "part1",
        """
        - matches:
          - path: {type: PathPrefix, value: /}
          - headers: [{name: version, value: one}]
          backendRefs: [{name: v1, port: 8080}]
        """,
        hostnames="[example.com, example.net]",
    ),
    route_yaml(
        "part2",
        """
        - matches:
          - path: {type: PathPrefix, value: /v2}
          - headers: [{name: version, value: two}]
          backendRefs: [{name: v2, port: 8080}]
        """,
        hostnames="[example.com]",
    ),
)


@pytest.mark.parametrize(
    ("host", "path", "headers", "expected"),
    [
        ("example.net", "/v2", {}, "v1"),
        ("example.com", "/v2", {}, "v2"),
        ("example.com", "/", {"Version": "two"}, "v2"),
        ("example.com", "/", {}, "v1"),
    ],
)
def test_matching_across_routes(
    host: str, path: str, headers: dict[str, str], expected: str
) -> None:
    assert served_by(ACROSS_ROUTES, head(path, host=host, headers=headers)) == expected


def test_hostname_specificity_beats_path_precedence() -> None:
    """Route A foo.example.com + PathPrefix / wins over route B *.example.com + Exact /login."""
    snapshot = compile_yaml(
        route_yaml(
            "a",
            "- backendRefs: [{name: v1, port: 8080}]",
            hostnames="[foo.example.com]",
        ),
        route_yaml(
            "b",
            """
            - matches: [{path: {type: Exact, value: /login}}]
              backendRefs: [{name: v2, port: 8080}]
            """,
            hostnames='["*.example.com"]',
        ),
    )
    assert served_by(snapshot, head("/login", host="foo.example.com")) == "v1"
    assert served_by(snapshot, head("/login", host="bar.example.com")) == "v2"
    assert served_by(snapshot, head("/other", host="bar.example.com")) is None


def test_longer_wildcard_hostname_wins() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "short", "- backendRefs: [{name: v1, port: 8080}]", hostnames='["*.example.com"]'
        ),
        route_yaml(
            "long", "- backendRefs: [{name: v2, port: 8080}]", hostnames='["*.foo.example.com"]'
        ),
        route_yaml("any", "- backendRefs: [{name: v3, port: 8080}]"),
    )
    assert served_by(snapshot, head("/", host="a.foo.example.com")) == "v2"
    assert served_by(snapshot, head("/", host="a.bar.example.com")) == "v1"
    assert served_by(snapshot, head("/", host="elsewhere.org")) == "v3"


@pytest.mark.parametrize(
    ("stamps", "expected"),
    [
        (("2024-01-01T00:00:00Z", "2023-01-01T00:00:00Z"), "v2"),
        (("2023-01-01T00:00:00Z", "2024-01-01T00:00:00Z"), "v1"),
        ((None, None), "v1"),  # equal age: "default/aaa" sorts before "default/bbb"
        ((None, "2024-01-01T00:00:00Z"), "v2"),  # a stamped route is older than an unstamped one
    ],
)
def test_ties_break_on_creation_timestamp_then_name(
    stamps: tuple[str | None, str | None], expected: str
) -> None:
    def meta(stamp: str | None) -> str:
        return f", creationTimestamp: '{stamp}'" if stamp else ""

    snapshot = compile_yaml(
        route_yaml("bbb", "- backendRefs: [{name: v2, port: 8080}]", extra_meta=meta(stamps[1])),
        route_yaml("aaa", "- backendRefs: [{name: v1, port: 8080}]", extra_meta=meta(stamps[0])),
    )
    assert served_by(snapshot, head("/x")) == expected


def test_first_rule_wins_within_a_route() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            """
            - matches: [{path: {type: PathPrefix, value: /a}}]
              backendRefs: [{name: v1, port: 8080}]
            - matches: [{path: {type: PathPrefix, value: /a}}]
              backendRefs: [{name: v2, port: 8080}]
            """,
        )
    )
    assert served_by(snapshot, head("/a/b")) == "v1"


def test_prefix_with_trailing_slash_is_element_wise() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            """
            - matches: [{path: {type: PathPrefix, value: /cors/}}]
              backendRefs: [{name: v1, port: 8080}]
            """,
        )
    )
    assert served_by(snapshot, head("/cors")) == "v1"
    assert served_by(snapshot, head("/cors/x")) == "v1"
    assert served_by(snapshot, head("/corsx")) is None


def test_regular_expression_paths_full_match_and_rank_below_prefixes() -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            """
            - matches: [{path: {type: RegularExpression, value: "/items/[0-9]+"}}]
              backendRefs: [{name: v1, port: 8080}]
            - matches: [{path: {type: PathPrefix, value: /items/7}}]
              backendRefs: [{name: v2, port: 8080}]
            - matches:
              - headers: [{name: x-id, type: RegularExpression, value: "ab+c"}]
              backendRefs: [{name: v3, port: 8080}]
            """,
        )
    )
    assert served_by(snapshot, head("/items/42")) == "v1"
    assert served_by(snapshot, head("/items/42x")) is None
    assert served_by(snapshot, head("/items/7")) == "v2"
    assert served_by(snapshot, head("/x", headers={"X-Id": "abbbc"})) == "v3"
    assert served_by(snapshot, head("/x", headers={"X-Id": "abbbcd"})) is None


def test_many_routes_differing_only_by_a_header_value_keep_their_order() -> None:
    """Runs of same-name exact matches are indexed by value; the result must equal a scan."""
    routes = [
        route_yaml(
            f"tenant{i:02d}",
            f"""
            - matches: [{{headers: [{{name: x-tenant, value: t{i % 5}}}]}}]
              backendRefs: [{{name: v{1 + i % 3}, port: 8080}}]
            """,
        )
        for i in range(20)
    ]
    snapshot = compile_yaml(*routes)
    # The oldest-by-name route requiring t3 is tenant03 (v1 + 3 % 3 = v1).
    rule = snapshot.routers[80].match(head("/", headers={"x-tenant": "t3"}))
    assert rule is not None and rule.ref.name == "tenant03"
    assert served_by(snapshot, head("/", headers={"x-tenant": "t9"})) is None
    assert served_by(snapshot, head("/")) is None


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/" + "x/" * 3000, "v2"),
        ("/api" + "x" * 8000, "v1"),
        ("*", "v1"),
        ("", "v1"),
        ("no-leading-slash/api", "v1"),
    ],
)
def test_odd_and_huge_paths_match_by_the_same_rules(path: str, expected: str) -> None:
    snapshot = compile_yaml(
        route_yaml(
            "r",
            """
            - backendRefs: [{name: v1, port: 8080}]
            - matches: [{path: {type: PathPrefix, value: /api}}]
              backendRefs: [{name: v2, port: 8080}]
            """,
        )
    )
    assert served_by(snapshot, head(path)) == expected
