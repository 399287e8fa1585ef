"""``backendRef`` targets: an MCP server behind a Kubernetes Service, one endpoint per session.

The Service port resolves as a route's backendRef does (:func:`resolve_service_ref`: the
Service, its ready EndpointSlice endpoints, and TLS when a BackendTLSPolicy targets the port).
An MCP session's upstream session lives on one replica, so each session sticks to the endpoint
chosen when it began (round robin over the ready endpoints, one pick per session): the endpoint
is kept in the sealed session state, in front of the upstream's session id
(``"<address>:<port> <upstream session id>"``). When that endpoint has left the Service (a
reload without it), the upstream session counts as expired and the federation initialises it
again on another endpoint, as it does for an upstream that forgot its session.

A target whose Service does not resolve is kept as an :class:`UnresolvedTarget` that fails
every session start with the reason: under ``FailClosed`` sessions fail naming it, under
``FailOpen`` the target is left out; the MCPBackend's status says so too (``agentgw.mcp.status``).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

from agentgw.http1 import Http1Pool
from agentgw.mcp.upstream import (
    Reply,
    Sessionless,
    Upstream,
    UpstreamError,
    UpstreamSessionGone,
)
from gateway.backends.base import Endpoint
from gateway.backends.service import ServiceBackend


@dataclass(frozen=True, slots=True)
class ServiceUpstream:
    """A Streamable HTTP target reached at ``path`` on the ready endpoints of a Service port."""

    name: str
    service: ServiceBackend
    path: str
    connect_timeout: float
    idle_timeout: float
    _by_key: dict[str, Upstream] = field(init=False, repr=False)
    _turn: Iterator[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        by_key = {str(e): self._upstream(e) for e in self.service.endpoints}
        object.__setattr__(self, "_by_key", by_key)
        object.__setattr__(self, "_turn", itertools.count())

    def _upstream(self, endpoint: Endpoint) -> Upstream:
        scheme = "https" if endpoint.tls is not None else "http"
        url = f"{scheme}://{endpoint}{self.path}"
        return Upstream(self.name, url, self.connect_timeout, self.idle_timeout, endpoint.tls)

    @property
    def url(self) -> str:
        destination = self.service.destination
        scheme = "https" if self.service.tls is not None else "http"
        return f"{scheme}://{destination.host}:{self.service.port}{self.path}"

    def _pick(self) -> tuple[str, Upstream]:
        endpoints = self.service.endpoints
        if not endpoints:
            destination = self.service.destination
            raise UpstreamError(
                self.name,
                f"Service {destination.namespace}/{destination.service_name} port "
                f"{self.service.port} has no ready endpoint",
            )
        key = str(endpoints[next(self._turn) % len(endpoints)])
        return key, self._by_key[key]

    def _stuck(self, session: str) -> tuple[str, Upstream, str | None]:
        """The endpoint a session is on, its upstream, and the upstream's own session id."""
        key, _, upstream_session = session.partition(" ")
        upstream = self._by_key.get(key)
        if upstream is None:
            raise UpstreamSessionGone(self.name, f"endpoint {key} left the Service")
        return key, upstream, upstream_session or None

    @contextlib.asynccontextmanager
    async def exchange(
        self, pool: Http1Pool, message: dict[str, Any], session: str | None, version: str | None
    ) -> AsyncIterator[Reply]:
        """To the session's endpoint; a session's first message picks one."""
        if session is None:
            key, upstream = self._pick()
            async with upstream.exchange(pool, message, None, version) as reply:
                yield Reply(f"{key} {reply.session_id or ''}", reply.messages, reply.streaming)
            return
        _, upstream, upstream_session = self._stuck(session)
        async with upstream.exchange(pool, message, upstream_session, version) as reply:
            yield reply

    @contextlib.asynccontextmanager
    async def listen(
        self, pool: Http1Pool, session: str | None, version: str | None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]] | None]:
        """The GET stream of the session's endpoint (None before a session began)."""
        if session is None:
            yield None
            return
        _, upstream, upstream_session = self._stuck(session)
        async with upstream.listen(pool, upstream_session, version) as stream:
            yield stream

    async def terminate(self, pool: Http1Pool, session: str, version: str | None) -> None:
        """End the upstream session on its endpoint (gone with its endpoint otherwise)."""
        with contextlib.suppress(UpstreamSessionGone):
            _, upstream, upstream_session = self._stuck(session)
            if upstream_session is not None:
                await upstream.terminate(pool, upstream_session, version)


@dataclass(frozen=True, slots=True)
class UnresolvedTarget(Sessionless):
    """A target whose backendRef does not resolve: every session start fails with ``reason``."""

    name: str
    url: str
    reason: str

    @contextlib.asynccontextmanager
    async def exchange(
        self, pool: Http1Pool, message: dict[str, Any], session: str | None, version: str | None
    ) -> AsyncIterator[Reply]:
        raise UpstreamError(self.name, self.reason)
        yield  # pragma: no cover - an async generator that never yields
