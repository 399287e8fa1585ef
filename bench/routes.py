"""Route compile and match time with 5,000 HTTPRoutes (run: ``python -m bench.routes``).

Generates one Gateway (a catch-all and a wildcard listener on one port), 100 Services with
EndpointSlices and 5,000 HTTPRoutes mixing exact and wildcard hostnames, Exact and PathPrefix paths,
header, query-parameter and method matches and a few regexes. Reports YAML load, compile and
per-request match times, next to two references measured in the same run: a plain dict lookup of
(host, path) (the floor) and a linear scan over every match entry (the naive router).
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import yaml

from gateway.compile import compile_snapshot
from gateway.config import load_text
from gateway.request import RequestHead
from gateway.routing.match import PATH_EXACT, PATH_PREFIX, MatchEntry
from gateway.routing.router import Router

SERVICES = 100
HOSTS = 500


def build_yaml(routes: int, seed: int = 7) -> str:
    """A multi-document YAML config with ``routes`` HTTPRoutes."""
    rng = random.Random(seed)
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "bench"},
            "spec": {
                "gatewayClassName": "ambient",
                "listeners": [
                    {"name": "http", "port": 8080, "protocol": "HTTP"},
                    {"name": "wild", "port": 8080, "protocol": "HTTP", "hostname": "*.wild.test"},
                ],
            },
        }
    ]
    for s in range(SERVICES):
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": f"svc{s}"},
                "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            }
        )
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"svc{s}-a",
                    "labels": {"kubernetes.io/service-name": f"svc{s}"},
                },
                "addressType": "IPv4",
                "endpoints": [{"addresses": [f"10.1.{s}.{e}"]} for e in range(1, 4)],
                "ports": [{"name": "http", "port": 8080}],
            }
        )
    for r in range(routes):
        host = f"host{r % HOSTS}.example.com" if r % 10 else f"*.zone{r % 50}.wild.test"
        matches: list[dict[str, Any]] = [
            {"path": {"type": "PathPrefix", "value": f"/api/v{r % 3}/r{r}"}}
        ]
        if r % 4 == 0:
            matches.append(
                {"path": {"value": "/"}, "headers": [{"name": "x-route", "value": str(r)}]}
            )
        if r % 5 == 0:
            matches.append(
                {"path": {"value": "/q"}, "queryParams": [{"name": "r", "value": str(r)}]}
            )
        if r % 7 == 0:
            matches.append({"path": {"value": f"/m/{r}"}, "method": "POST"})
        if r % 100 == 0:
            matches.append({"path": {"type": "RegularExpression", "value": f"/re/{r}/[0-9]+"}})
        docs.append(
            {
                "apiVersion": "gateway.networking.k8s.io/v1",
                "kind": "HTTPRoute",
                "metadata": {"name": f"route{r}"},
                "spec": {
                    "parentRefs": [{"name": "bench"}],
                    "hostnames": [host],
                    "rules": [
                        {
                            "matches": matches,
                            "backendRefs": [
                                {"name": f"svc{rng.randrange(SERVICES)}", "port": 80, "weight": 90},
                                {"name": f"svc{rng.randrange(SERVICES)}", "port": 80, "weight": 10},
                            ],
                        },
                        {
                            "matches": [{"path": {"type": "Exact", "value": f"/health/{r}"}}],
                            "backendRefs": [{"name": f"svc{r % SERVICES}", "port": 80}],
                        },
                    ],
                },
            }
        )
    return yaml.safe_dump_all(docs, sort_keys=False)


def requests(
    count: int, routes: int, seed: int = 11
) -> list[tuple[str, str, str, str, list[tuple[str, str]]]]:
    """(method, path, query, host, headers) tuples: mostly hits of every match kind, some misses."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        r = rng.randrange(routes)
        kind = rng.randrange(10)
        # Header, query and method matches exist on every 4th, 5th and 7th route.
        r -= r % {6: 4, 7: 5, 8: 7}.get(kind, 1)
        host = f"host{r % HOSTS}.example.com" if r % 10 else f"a.b.zone{r % 50}.wild.test"
        method, query, headers = "GET", "", [("user-agent", "bench"), ("accept", "*/*")]
        if kind < 4:
            path = f"/api/v{r % 3}/r{r}/items/{rng.randrange(1000)}"
        elif kind < 6:
            path = f"/health/{r}"
        elif kind == 6:
            path, headers = "/anything", [*headers, ("X-Route", str(r))]
        elif kind == 7:
            path, query = "/q/x", f"a=1&r={r}"
        elif kind == 8:
            path, method = f"/m/{r}", "POST"
        else:
            path, host = "/nothing/here", f"miss{r}.example.org"
        out.append((method, path, query, host, headers))
    return out


def timed(fn: Callable[[RequestHead], object], heads: list[RequestHead]) -> list[int]:
    """Nanoseconds per call."""
    clock = time.perf_counter_ns
    samples = []
    for head in heads:
        start = clock()
        fn(head)
        samples.append(clock() - start)
    return samples


def percentile(samples: list[int], q: float) -> float:
    """The q-quantile in microseconds."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


def linear_scan(entries: list[MatchEntry]) -> Callable[[RequestHead], object]:
    """The naive router: test every entry's path and predicates, keep the best by precedence."""

    def match(head: RequestHead) -> object:
        best: tuple[Any, ...] | None = None
        winner = None
        for entry in entries:
            path = head.path
            if entry.path_type == PATH_EXACT:
                ok = path == entry.path
                rank = 0
            elif entry.path_type == PATH_PREFIX:
                p = entry.path.rstrip("/")
                ok = p == "" or path == p or path.startswith(p + "/")
                rank = 1
            else:
                ok = entry.path_regex is not None and entry.path_regex.fullmatch(path) is not None
                rank = 2
            if ok and entry.accepts(head):
                key = (rank, -len(entry.path), *entry.key)
                if best is None or key < best:
                    best, winner = key, entry.rule
        return winner

    return match


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--routes", type=int, default=5000)
    parser.add_argument("--lookups", type=int, default=200_000)
    args = parser.parse_args()

    text = build_yaml(args.routes)
    start = time.perf_counter()
    resources = load_text(text, "bench.yaml")
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    snapshot = compile_snapshot(resources, 1)
    compile_s = time.perf_counter() - start
    router = snapshot.routers[8080]
    assert isinstance(router, Router)

    specs = requests(args.lookups, args.routes)
    heads = [RequestHead(m, p, q, h, hs, listener_port=8080) for m, p, q, h, hs in specs]
    hits = sum(
        router.match(RequestHead(m, p, q, h, hs)) is not None for m, p, q, h, hs in specs[:10_000]
    )
    table = {(h, p): m for m, p, q, h, hs in specs}
    gc.collect()
    gc.disable()
    router_ns = timed(router.match, heads)
    dict_ns = timed(lambda head: table.get((head.host, head.path)), heads)
    entries = _collect(router)
    scan_heads = heads[:300]
    scan_ns = timed(linear_scan(entries), scan_heads)
    gc.enable()

    rows = [
        ("router.match (this gateway)", router_ns),
        ("reference: dict[(host, path)] lookup", dict_ns),
        (f"reference: linear scan over {len(entries)} entries", scan_ns),
    ]
    base50, base99 = percentile(dict_ns, 0.5), percentile(dict_ns, 0.99)
    print(f"routes: {args.routes}  listeners: {len(snapshot.listeners)}  lookups: {len(heads)}")
    print(
        f"YAML load + validation: {load_s:.3f} s   "
        f"compile_snapshot: {compile_s:.3f} s  (target < 2 s)"
    )
    print(f"hit rate over the first 10,000 requests: {hits / 100:.1f} %\n")
    print(
        f"{'match':<46} {'n':>8} {'mean µs':>8} {'p50 µs':>8} {'p99 µs':>8} "
        f"{'p50/ref':>9} {'p99/ref':>9}"
    )
    for name, samples in rows:
        p50, p99 = percentile(samples, 0.5), percentile(samples, 0.99)
        mean = statistics.fmean(samples) / 1000
        print(
            f"{name:<46} {len(samples):>8} {mean:>8.2f} {p50:>8.2f} {p99:>8.2f} "
            f"{p50 / base50:>9.1f} {p99 / base99:>9.1f}"
        )
    print("\ntarget: router.match p99 < 20 µs")


def _collect(router: Router) -> list[MatchEntry]:
    """Every distinct match entry in a compiled router."""
    out: dict[int, MatchEntry] = {}
    listeners = router.listeners
    for table in (*listeners.exact.values(), *listeners.wildcard.values(), listeners.any):
        if table is None:
            continue
        for index in (*table.exact.values(), *table.wildcard.values(), table.any):
            if index is not None:
                for entry in index.entries():
                    out[id(entry)] = entry
    return list(out.values())


if __name__ == "__main__":
    main()
