"""The PortRouter: listener selection by Host (with isolation), then route hostnames, then paths."""

from __future__ import annotations

from typing import TypeVar

from gateway.request import RequestHead
from gateway.routing.candidates import build_steps
from gateway.routing.hosts import HostTable, host_key
from gateway.routing.match import PATH_EXACT, PATH_PREFIX, MatchEntry
from gateway.routing.misdirected import MISDIRECTED
from gateway.routing.paths import PathIndex
from gateway.snapshot import CompiledRule

RouteTable = HostTable[PathIndex]
T = TypeVar("T")


# Results remembered per router when no rule of the port looks at headers or query parameters:
# then host, path, method and TLS server name decide the match alone. Bounded in entries and in
# path length (a flood of unique paths only costs misses; the table is emptied when full).
_CACHE_ENTRIES = 4096
_CACHE_PATH_LIMIT = 256
_MISS = object()


class Router:
    """Routes the requests of one port; implements ``gateway.snapshot.PortRouter``."""

    __slots__ = ("_cache", "listeners")

    def __init__(self, listeners: HostTable[RouteTable], cacheable: bool = False) -> None:
        self.listeners = listeners
        self._cache: dict[tuple[str, str, str, str | None], CompiledRule | None] | None = (
            {} if cacheable else None
        )

    def match(self, head: RequestHead) -> CompiledRule | None:
        """The winning rule, or None (404); only the most specific listener's routes count.

        With a TLS server name (``head.sni``), a Host that selects another listener than the
        server name did returns :data:`MISDIRECTED` (421); a Host no listener serves is None.
        """
        cache = self._cache
        if cache is None or len(head.path) > _CACHE_PATH_LIMIT:
            return self._match(head)
        key = (head.host, head.path, head.method, head.sni)
        rule = cache.get(key, _MISS)
        if rule is _MISS:
            rule = self._match(head)
            if len(cache) >= _CACHE_ENTRIES:
                cache.clear()
            cache[key] = rule
        return rule  # type: ignore[return-value]

    def _match(self, head: RequestHead) -> CompiledRule | None:
        host = head.host
        routes = self.listeners.best(host)
        if routes is None:
            return None
        sni = head.sni
        if sni is not None and sni != host and self.listeners.best(sni) is not routes:
            return MISDIRECTED
        # Route hostnames in precedence order: exact, longest wildcard, catch-all; unlike
        # listeners, a less specific route hostname is tried when a more specific one has no match.
        index = routes.exact.get(host)
        if index is not None:
            rule = index.match(head)
            if rule is not None:
                return rule
        if routes.suffix_lengths:
            size = len(host)
            for length in routes.suffix_lengths:
                if size > length:
                    index = routes.wildcard.get(host[-length:])
                    if index is not None:
                        rule = index.match(head)
                        if rule is not None:
                            return rule
        if routes.any is not None:
            return routes.any.match(head)
        return None


class RouterBuilder:
    """Collects match entries per (listener hostname, effective hostname) and builds a Router."""

    def __init__(self) -> None:
        self._listeners: dict[
            tuple[str, str], dict[tuple[str, str], dict[tuple[int, int], MatchEntry]]
        ] = {}

    def add_listener(self, hostname: str | None) -> None:
        """Make a listener exist (so it isolates its hosts) even if no route attaches."""
        self._listeners.setdefault(host_key(hostname), {})

    def add(self, listener_hostname: str | None, hostname: str | None, entry: MatchEntry) -> None:
        """Attach one match entry under a listener for one effective route hostname."""
        routes = self._listeners.setdefault(host_key(listener_hostname), {})
        entries = routes.setdefault(host_key(hostname), {})
        entries.setdefault((id(entry.rule), entry.match_index), entry)

    def build(self) -> Router:
        """Sort every candidate list once; the Router never sorts or allocates much per request."""
        listeners = _table({key: _route_table(routes) for key, routes in self._listeners.items()})
        cacheable = not any(
            entry.headers or entry.query
            for routes in self._listeners.values()
            for entries in routes.values()
            for entry in entries.values()
        )
        return Router(listeners, cacheable)


def _route_table(routes: dict[tuple[str, str], dict[tuple[int, int], MatchEntry]]) -> RouteTable:
    """A route hostname table of path indexes."""
    return _table({key: _path_index(list(entries.values())) for key, entries in routes.items()})


def _path_index(entries: list[MatchEntry]) -> PathIndex:
    """Group entries by path kind and value, each group sorted by precedence."""
    exact: dict[str, list[MatchEntry]] = {}
    prefixes: dict[str, list[MatchEntry]] = {}
    regexes: list[MatchEntry] = []
    for entry in entries:
        if entry.path_type == PATH_EXACT:
            exact.setdefault(entry.path, []).append(entry)
        elif entry.path_type == PATH_PREFIX:
            prefixes.setdefault(entry.path.rstrip("/"), []).append(entry)
        else:
            regexes.append(entry)
    return PathIndex(
        exact={path: build_steps(sorted(group, key=_key)) for path, group in exact.items()},
        # "/foo/" and "/foo" share a key; the longer value as written wins a tie.
        prefixes={
            path: build_steps(sorted(group, key=_prefix_key)) for path, group in prefixes.items()
        },
        regexes=tuple(sorted(regexes, key=_key)),
        longest_prefix=max(map(len, prefixes), default=0),
    )


def _key(entry: MatchEntry) -> tuple[object, ...]:
    return entry.key


def _prefix_key(entry: MatchEntry) -> tuple[object, ...]:
    return (-len(entry.path), *entry.key)


def _table(values: dict[tuple[str, str], T]) -> HostTable[T]:
    """A HostTable from values keyed by ``host_key``."""
    exact: dict[str, T] = {}
    wildcard: dict[str, T] = {}
    catch_all: T | None = None
    for (kind, name), value in values.items():
        if kind == "exact":
            exact[name] = value
        elif kind == "wildcard":
            wildcard[name] = value
        else:
            catch_all = value
    return HostTable.of(exact, wildcard, catch_all)
