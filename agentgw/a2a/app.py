"""The A2ABackend responder: several A2A agents behind the gateway at ``<path>/<agent>/``.

- ``GET <path>/agents``: the catalog, a JSON list of every agent's rewritten card;
- ``GET <path>/<agent>/.well-known/agent-card.json`` (or ``agent.json``): the agent's card with
  its URLs pointing at ``<path>/<agent>/`` here (:mod:`agentgw.a2a.card`);
- anything else under ``<path>/<agent>/``: relayed to the agent (JSON-RPC, REST, and SSE
  streams such as ``message/stream``, chunk by chunk, never buffered), with the A2A headers and
  the client's ``Authorization`` (the agent authenticates its callers).

Each call is counted by method and outcome (:mod:`agentgw.a2a.metrics`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from agentgw.a2a.card import CARD_PATHS, rewrite
from agentgw.a2a.metrics import A2aMetrics
from agentgw.http1 import Http1Pool, HttpError, Origin
from agentgw.http1 import Response as Upstream
from gateway.protocols.sse import SseError, SseReader

log = logging.getLogger("agentgw.a2a")

_FORWARDED = ("content-type", "accept", "a2a-version", "a2a-extensions", "authorization")
_RELAYED = ("content-type", "cache-control", "a2a-version", "a2a-extensions")
_MAX_BODY = 8 << 20


@dataclass(frozen=True, slots=True)
class AgentTarget:
    """One agent: its name here and its base URL."""

    name: str
    url: str  # ends with "/"


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": message}, status)


class A2aApp:
    """One A2ABackend as an ASGI app (built per compile)."""

    def __init__(
        self,
        name: str,
        agents: list[AgentTarget],
        pool: Callable[[], Http1Pool],
        metrics: A2aMetrics,
        connect_timeout: float,
        idle_timeout: float,
    ) -> None:
        self.name = name
        self.agents = {agent.name: agent for agent in agents}
        self.pool = pool
        self.metrics = metrics
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan
        request = Request(scope, receive)
        response = await self._handle(request)
        await response(scope, receive, send)

    def _split(self, path: str) -> tuple[str, AgentTarget | None, str]:
        """(the route's base path, the agent named in the path, the rest after it)."""
        segments = path.split("/")
        for i, segment in enumerate(segments):
            agent = self.agents.get(segment)
            if agent is not None and i > 0:
                return "/".join(segments[:i]), agent, "/".join(segments[i + 1 :])
        return path, None, ""

    def _public(self, request: Request, base: str, agent: AgentTarget) -> str:
        return f"{request.url.scheme}://{request.url.netloc}{base}/{agent.name}/"

    async def _handle(self, request: Request) -> Response:
        path = request.url.path
        base, agent, rest = self._split(path)
        if agent is None:
            if path.rstrip("/").endswith("/agents") and request.method == "GET":
                return await self._catalog(request, path.rstrip("/")[: -len("/agents")])
            names = ", ".join(sorted(self.agents))
            return _error(404, f"no agent in {path!r} (agents: {names})")
        if "/" + rest in CARD_PATHS and request.method == "GET":
            card = await self._card(agent, "/" + rest)
            self.metrics.request(self.name, agent.name, "card", "ok" if card else "failed")
            if card is None:
                return _error(502, f"agent {agent.name}: no agent card")
            return _json(rewrite(card, self._public(request, base, agent)))
        return await self._relay(request, agent, rest)

    async def _card(self, agent: AgentTarget, path: str) -> dict[str, Any] | None:
        try:
            response = await self.pool().request(
                "GET",
                Origin.of(agent.url.rstrip("/") + path),
                {"accept": "application/json"},
                b"",
                self.connect_timeout,
                self.idle_timeout,
            )
            body = await response.read()
            response.close()
        except HttpError as exc:
            log.warning("a2a %s: agent %s: card: %s", self.name, agent.name, exc)
            return None
        if response.status != 200:
            return None
        try:
            card = orjson.loads(body)
        except orjson.JSONDecodeError:
            return None
        return card if isinstance(card, dict) else None

    async def _catalog(self, request: Request, base: str) -> Response:
        cards = await asyncio.gather(
            *(self._card(agent, CARD_PATHS[0]) for agent in self.agents.values())
        )
        return _json(
            [
                rewrite(card, self._public(request, base, agent))
                for agent, card in zip(self.agents.values(), cards, strict=True)
                if card is not None
            ]
        )

    async def _relay(self, request: Request, agent: AgentTarget, rest: str) -> Response:
        body = await request.body()
        if len(body) > _MAX_BODY:
            return _error(413, f"the request is over {_MAX_BODY} bytes")
        method = _rpc_method(body)
        url = agent.url + rest + (f"?{request.url.query}" if request.url.query else "")
        headers = {k: v for k in _FORWARDED if (v := request.headers.get(k)) is not None}
        try:
            upstream = await self.pool().request(
                request.method,
                Origin.of(url),
                headers,
                body,
                self.connect_timeout,
                self.idle_timeout,
            )
        except HttpError as exc:
            self.metrics.request(self.name, agent.name, method, "failed")
            return _error(502, f"agent {agent.name}: {exc}")
        return _Relay(upstream, self, agent.name, method)


def _rpc_method(body: bytes) -> str:
    """The JSON-RPC method of a request body ("" when it is not one)."""
    if not body.startswith(b"{"):
        return ""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ""
    method = value.get("method") if isinstance(value, dict) else None
    return method if isinstance(method, str) else ""


class _Relay(Response):
    """The agent's answer relayed as it arrives; JSON-RPC errors noted for the metrics."""

    def __init__(self, upstream: Upstream, app: A2aApp, agent: str, method: str) -> None:
        self.upstream = upstream
        self.app = app
        self.agent = agent
        self.method = method

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        upstream = self.upstream
        headers = [
            (k.encode(), v.encode("latin-1"))
            for k in _RELAYED
            if (v := upstream.headers.get(k)) is not None
        ]
        streaming = upstream.headers.get("content-type", "").startswith("text/event-stream")
        outcome = "failed" if upstream.status >= 500 else "ok"
        reader = SseReader() if streaming else None
        kept = b""
        try:
            await send(
                {"type": "http.response.start", "status": upstream.status, "headers": headers}
            )
            async for chunk in upstream.chunks():
                if reader is not None:
                    if any(_is_error(e.data) for e in reader.feed(chunk)):
                        outcome = "error"
                elif len(kept) < 65536:
                    kept += chunk
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            if reader is None and _is_error(kept.decode(errors="replace")):
                outcome = "error"
        except (HttpError, SseError, OSError):
            outcome = "failed"
        finally:
            upstream.close()
            self.app.metrics.request(self.app.name, self.agent, self.method, outcome)


def _is_error(data: str) -> bool:
    """True when ``data`` is a JSON-RPC error message."""
    if '"error"' not in data:
        return False
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return False
    return isinstance(value, dict) and "error" in value and "result" not in value
