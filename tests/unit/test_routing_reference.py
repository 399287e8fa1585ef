"""The indexed router agrees with a brute-force reading of the spec's comparator (research §2.3).

Random configs and requests; the reference enumerates every attached (route, rule, match), keeps
those whose hostname and predicates hold, and takes the best by the §2.3 key. It shares no code
with gateway.routing, so a mistake in the indexes (prefix walk, wildcard tables, value switches,
listener isolation) shows up as a disagreement.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

import pytest

from tests.fixtures.route_config import compile_yaml, head

LISTENER_HOSTS = [None, "*.example.com", "a.example.com", "*.a.example.com"]
ROUTE_HOSTS = [
    "a.example.com",
    "b.example.com",
    "*.example.com",
    "x.a.example.com",
    "*.a.example.com",
]
PATHS = ["/", "/a", "/a/", "/a/b", "/b", "/a/b/c"]
REQUEST_HOSTS = [
    "a.example.com",
    "b.example.com",
    "x.a.example.com",
    "y.a.example.com",
    "other.org",
]
REQUEST_PATHS = ["/", "/a", "/a/", "/a/b", "/a/bc", "/b/c", "/a/b/c/d", "/c", "/ab"]
STAMPS = [None, "2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z"]


@dataclass
class Match:
    path_type: str
    path: str
    method: str | None
    headers: dict[str, str]
    query: dict[str, str]


@dataclass
class Route:
    name: str
    hostnames: list[str]
    stamp: str | None
    rules: list[list[Match]] = field(default_factory=list)


def random_config(rng: random.Random) -> tuple[list[str | None], list[Route]]:
    listeners = [None, *rng.sample(LISTENER_HOSTS[1:], rng.randrange(len(LISTENER_HOSTS)))]
    routes = []
    for i in range(rng.randrange(1, 12)):
        route = Route(
            name=f"r{rng.randrange(100):02d}x{i}",
            hostnames=rng.sample(ROUTE_HOSTS, rng.choice([0, 0, 1, 2])),
            stamp=rng.choice(STAMPS),
        )
        for _ in range(rng.randrange(1, 4)):
            route.rules.append(
                [
                    Match(
                        path_type=rng.choice(["Exact", "PathPrefix", "PathPrefix"]),
                        path=rng.choice(PATHS),
                        method=rng.choice([None, None, "GET", "POST"]),
                        headers={
                            n: rng.choice("12")
                            for n in rng.sample(["x-a", "x-b"], rng.randrange(3))
                        },
                        query={
                            n: rng.choice("12") for n in rng.sample(["q", "r"], rng.randrange(3))
                        },
                    )
                    for _ in range(rng.randrange(1, 4))
                ]
            )
        routes.append(route)
    return listeners, routes


def to_yaml(listeners: list[str | None], routes: list[Route]) -> list[str]:
    listener_lines = "".join(
        f"  - {{name: l{i}, port: 80, protocol: HTTP" + (f', hostname: "{h}"' if h else "") + "}\n"
        for i, h in enumerate(listeners)
    )
    documents = [
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\n"
        f"spec:\n  gatewayClassName: ambient\n  listeners:\n{listener_lines}"
    ]
    for route in routes:
        stamp = f", creationTimestamp: '{route.stamp}'" if route.stamp else ""
        hosts = f"  hostnames: {[h for h in route.hostnames]}\n" if route.hostnames else ""
        rules = ""
        for matches in route.rules:
            rules += "  - backendRefs: [{name: v1, port: 8080}]\n    matches:\n"
            for m in matches:
                rules += f"    - path: {{type: {m.path_type}, value: '{m.path}'}}\n"
                if m.method:
                    rules += f"      method: {m.method}\n"
                if m.headers:
                    rules += f"      headers: {name_values(m.headers)}\n"
                if m.query:
                    rules += f"      queryParams: {name_values(m.query)}\n"
        documents.append(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"
            f"metadata: {{name: {route.name}{stamp}}}\nspec:\n  parentRefs: [{{name: gw}}]\n"
            f"{hosts}  rules:\n{rules}"
        )
    return documents


def name_values(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def covers(pattern: str | None, host: str) -> bool:
    if pattern is None:
        return True
    if pattern.startswith("*."):
        return host.endswith(pattern[1:])
    return host == pattern


def effective(listener: str | None, hostnames: list[str]) -> list[str | None]:
    if not hostnames:
        return [listener]
    if listener is None:
        return list(hostnames)
    out: list[str | None] = []
    for h in hostnames:
        if h == listener or (listener.startswith("*.") and covers(listener, h)):
            out.append(h)
        elif h.startswith("*.") and covers(h, listener.removeprefix("*")):
            out.append(listener)
    return out


def specificity(pattern: str | None) -> tuple[int, int]:
    if pattern is None:
        return (0, 0)
    return (0 if pattern.startswith("*.") else len(pattern), len(pattern))


def reference(
    listeners: list[str | None],
    routes: list[Route],
    host: str,
    path: str,
    method: str,
    headers: dict[str, str],
    query: str,
) -> tuple[str, int] | None:
    candidates = [h for h in listeners if covers(h, host)]
    if not candidates:
        return None
    # The listener with the most specific hostname handles the request alone.
    listener = max(
        candidates, key=lambda h: (h is not None and not h.startswith("*."), len(h or ""))
    )
    params: dict[str, str] = {}
    for k, v in parse_qsl(query, keep_blank_values=True):
        params.setdefault(k, v)
    lowered = {k.lower(): v for k, v in headers.items()}
    best: tuple[object, ...] | None = None
    winner = None
    for route in routes:
        for hostname in effective(listener, route.hostnames):
            if not covers(hostname, host):
                continue
            for r, matches in enumerate(route.rules):
                for j, m in enumerate(matches):
                    if m.path_type == "Exact":
                        ok, kind = path == m.path, 3
                    else:
                        p = m.path.rstrip("/")
                        ok, kind = (p == "" or path == p or path.startswith(p + "/")), 2
                    ok = ok and (m.method is None or m.method == method)
                    ok = ok and all(lowered.get(k) == v for k, v in m.headers.items())
                    ok = ok and all(params.get(k) == v for k, v in m.query.items())
                    if not ok:
                        continue
                    exact_len, any_len = specificity(hostname)
                    key = (
                        -exact_len,
                        -any_len,
                        -kind,
                        -(len(m.path) if kind == 2 else 0),
                        0 if m.method else 1,
                        -len(m.headers),
                        -len(m.query),
                        route.stamp or "9999",  # unstamped routes count as the newest
                        f"default/{route.name}",
                        r,
                        j,
                    )
                    if best is None or key < best:
                        best, winner = key, (route.name, r)
    return winner


@pytest.mark.parametrize("seed", range(60))
def test_router_agrees_with_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    listeners, routes = random_config(rng)
    snapshot = compile_yaml(*to_yaml(listeners, routes), with_gateway=False)
    router = snapshot.routers[80]
    for _ in range(80):
        host = rng.choice(REQUEST_HOSTS)
        path = rng.choice(REQUEST_PATHS)
        method = rng.choice(["GET", "POST", "PUT"])
        headers = {n: rng.choice("123") for n in rng.sample(["X-A", "x-b"], rng.randrange(3))}
        query = "&".join(
            f"{n}={rng.choice('123')}" for n in rng.sample(["q", "r", "s"], rng.randrange(4))
        )
        expected = reference(listeners, routes, host, path, method, headers, query)
        rule = router.match(
            head(f"{path}?{query}" if query else path, host=host, method=method, headers=headers)
        )
        got = (rule.ref.name, rule.ref.rule_index) if rule is not None else None
        assert got == expected, (host, path, method, headers, query)


def test_value_switch_runs_agree_with_brute_force() -> None:
    """Many routes on one path differing only by a header value: the indexed run keeps order."""
    rng = random.Random(99)
    routes = [
        Route(
            name=f"t{i:03d}",
            hostnames=[],
            stamp=rng.choice(STAMPS),
            rules=[[Match("PathPrefix", "/", None, {"x-a": str(rng.randrange(6))}, {})]],
        )
        for i in range(40)
    ]
    snapshot = compile_yaml(*to_yaml([None], routes), with_gateway=False)
    for value in range(7):
        expected = reference([None], routes, "h", "/z", "GET", {"x-a": str(value)}, "")
        rule = snapshot.routers[80].match(head("/z", host="h", headers={"x-a": str(value)}))
        assert ((rule.ref.name, rule.ref.rule_index) if rule else None) == expected


@pytest.mark.parametrize("seed", range(20))
def test_cached_router_agrees_with_brute_force(seed: int) -> None:
    """Without header or query predicates the router remembers results: repeats still agree."""
    rng = random.Random(1000 + seed)
    listeners, routes = random_config(rng)
    for route in routes:
        for matches in route.rules:
            for match in matches:
                match.headers, match.query = {}, {}
    snapshot = compile_yaml(*to_yaml(listeners, routes), with_gateway=False)
    router = snapshot.routers[80]
    assert router._cache is not None  # type: ignore[attr-defined]
    for _ in range(300):  # 135 distinct (host, path, method): most requests are repeats
        host = rng.choice(REQUEST_HOSTS)
        path = rng.choice(REQUEST_PATHS)
        method = rng.choice(["GET", "POST", "PUT"])
        expected = reference(listeners, routes, host, path, method, {}, "")
        rule = router.match(head(path, host=host, method=method))
        got = (rule.ref.name, rule.ref.rule_index) if rule is not None else None
        assert got == expected, (host, path, method)


def test_router_with_header_matches_is_not_cached() -> None:
    route = Route("h", [], None, [[Match("PathPrefix", "/", None, {"x-a": "1"}, {})]])
    snapshot = compile_yaml(*to_yaml([None], [route]), with_gateway=False)
    router = snapshot.routers[80]
    assert router._cache is None  # type: ignore[attr-defined]
    assert router.match(head("/", host="h", headers={"x-a": "1"})) is not None
    assert router.match(head("/", host="h", headers={"x-a": "2"})) is None
