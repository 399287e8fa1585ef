"""Consistent hashing on a header, a cookie or the client IP, over a ring of virtual nodes.

Each endpoint owns ``VNODES`` points on a 64-bit ring hashed from its address, so adding or
removing one endpoint only moves the keys that land next to its points. Hashes are blake2b, not
``hash()``, so every worker process (and every restart) maps a key to the same endpoint.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from hashlib import blake2b
from http.cookies import CookieError, SimpleCookie
from typing import TYPE_CHECKING

from gateway.lb.balancer import BaseBalancer

if TYPE_CHECKING:
    from gateway.backends.base import Endpoint
    from gateway.lb.health import HealthRegistry
    from gateway.request import RequestHead

VNODES = 160


def hash64(data: bytes) -> int:
    """A stable 64-bit hash."""
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def cookie_value(head: RequestHead, name: str) -> str | None:
    """The value of one cookie in the request's Cookie header(s)."""
    for header, value in head.headers:
        if header.lower() != "cookie" or name not in value:
            continue
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(value)
        except CookieError:
            continue
        morsel = jar.get(name)
        if morsel is not None:
            return morsel.value
    return None


class ConsistentHashBalancer(BaseBalancer):
    """Maps a request key onto a hash ring; requests without the key are spread at random."""

    __slots__ = ("_hash_on", "_name", "_owners", "_points")

    def __init__(
        self,
        endpoints: tuple[Endpoint, ...],
        hash_on: str = "source-ip",
        health: HealthRegistry | None = None,
    ) -> None:
        super().__init__(endpoints, health)
        kind, _, name = hash_on.partition(":")
        if kind not in ("header", "cookie", "source-ip") or (kind != "source-ip" and not name):
            raise ValueError(
                f"hash_on {hash_on!r}: expected header:<name>, cookie:<name> or source-ip"
            )
        self._hash_on = kind
        self._name = name.lower() if kind == "header" else name
        ring = sorted(
            (hash64(f"{endpoint}#{v}".encode()), i)
            for i, endpoint in enumerate(endpoints)
            for v in range(VNODES)
        )
        self._points = [point for point, _ in ring]
        self._owners = [owner for _, owner in ring]

    def key(self, head: RequestHead) -> str | None:
        """The value hashed for this request, or None when the request does not carry it."""
        if self._hash_on == "header":
            return head.get(self._name)
        if self._hash_on == "cookie":
            return cookie_value(head, self._name)
        return head.client_ip or None

    def _choose(self, head: RequestHead, candidates: list[int] | None) -> int:
        key = self.key(head)
        if key is None:
            pool = candidates if candidates is not None else range(len(self.endpoints))
            return random.choice(pool)
        points, owners = self._points, self._owners
        start = bisect_left(points, hash64(key.encode()))
        if candidates is None:
            return owners[start % len(owners)]
        allowed = set(candidates)
        # Walk clockwise to the first allowed owner: keys of an ejected endpoint move to its
        # neighbour on the ring and come back when it returns.
        for step in range(len(owners)):
            owner = owners[(start + step) % len(owners)]
            if owner in allowed:
                return owner
        return candidates[0]
