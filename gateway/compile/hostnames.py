"""Listener x route hostname intersection (spec §1.2)."""

from __future__ import annotations


def intersect(listener: str | None, route_hostnames: list[str]) -> list[str | None]:
    """The effective hostnames of a route on a listener; empty when nothing intersects.

    ``None`` stands for "every host" (neither side sets a hostname).
    """
    if not route_hostnames:
        return [listener]
    if listener is None:
        return list(dict.fromkeys(route_hostnames))
    out: dict[str | None, None] = {}
    for hostname in route_hostnames:
        effective = _pair(listener, hostname)
        if effective is not None:
            out[effective] = None
    return list(out)


def _pair(listener: str, route: str) -> str | None:
    """One listener hostname with one route hostname: the narrower of the two, or None."""
    if listener == route:
        return route
    listener_wild, route_wild = listener.startswith("*."), route.startswith("*.")
    if listener_wild and route_wild:
        if listener[1:].endswith(route[1:]):
            return listener
        if route[1:].endswith(listener[1:]):
            return route
        return None
    if listener_wild:
        return route if route.endswith(listener[1:]) else None
    if route_wild:
        return listener if listener.endswith(route[1:]) else None
    return None


def overlaps(first: str | None, second: str | None) -> bool:
    """Whether two effective hostnames (None: every host) share at least one host."""
    if first is None or second is None:
        return True
    return _pair(first, second) is not None
