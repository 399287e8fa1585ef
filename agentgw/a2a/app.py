"""The A2ABackend responder: several A2A agents behind the gateway at ``<path>/<agent>/``.

- ``GET <path>/agents``: the catalog, a JSON list of every agent's rewritten card;
- ``GET <path>/<agent>/.well-known/agent-card.json`` (or ``agent.json``): the agent's card with
  its URLs pointing at ``<path>/<agent>/`` here (:mod:`agentgw.a2a.card`);
- anything else under ``<path>/<agent>/``: relayed to the agent (JSON-RPC, REST, and SSE
  streams such as ``message/stream``, chunk by chunk, never buffered), with the A2A headers and
  the client's ``Authorization`` (the agent authenticates its callers).

Each call is counted by method and outcome, and the last task state an answer reported by
state (:mod:`agentgw.a2a.metrics`). The request's span and access-log line carry ``a2a.agent``,
``a2a.method``, ``a2a.task.state`` (v0.3 ``completed``; v1.0 ``TASK_STATE_COMPLETED`` reads the
same) and, for a JSON-RPC error, ``error.type`` (its code).
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

from agentgw.a2a.card import CARD_PATHS, fetch_card, rewrite
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
            return await fetch_card(
                self.pool(), agent.url, path, self.connect_timeout, self.idle_timeout
            )
        except HttpError as exc:
            log.warning("a2a %s: agent %s: card: %s", self.name, agent.name, exc)
            return None

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
        annotate = (request.scope.get("extensions") or {}).get("ambient.annotate") or _ignore
        annotate("a2a.agent", agent.name)
        if method:
            annotate("a2a.method", method)
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
        return _Relay(upstream, self, agent.name, method, annotate)


def _ignore(key: str, value: str | int | float | bool) -> None:
    """``ambient.annotate`` where the server offers none."""


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

    def __init__(
        self,
        upstream: Upstream,
        app: A2aApp,
        agent: str,
        method: str,
        annotate: Callable[[str, str | int | float | bool], None],
    ) -> None:
        self.upstream = upstream
        self.app = app
        self.agent = agent
        self.method = method
        self.annotate = annotate
        self.state = ""  # the last task state the answer reported

    def _read(self, data: str) -> bool:
        """Note what one JSON-RPC message of the answer says; whether it is an error."""
        if '"error"' not in data and '"state"' not in data:
            return False
        try:
            value = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False
        if not isinstance(value, dict):
            return False
        error = value.get("error")
        if isinstance(error, dict) and "result" not in value:
            self.annotate("error.type", str(error.get("code", "error")))
            return True
        state = _task_state(value.get("result"))
        if state and state != self.state:
            self.state = state
            self.annotate("a2a.task.state", state)  # set as it changes: a stream's span ends
        return False

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
                    if [e for e in reader.feed(chunk) if self._read(e.data)]:
                        outcome = "error"
                elif len(kept) < 65536:
                    kept += chunk
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            # Read before the last message: the request's span ends with it.
            if reader is None and self._read(kept.decode(errors="replace")):
                outcome = "error"
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (HttpError, SseError, OSError):
            outcome = "failed"
        finally:
            upstream.close()
            self.app.metrics.request(self.app.name, self.agent, self.method, outcome)
            if self.state:
                self.app.metrics.task_state(self.app.name, self.agent, self.state)


# Where a JSON-RPC result holds the task's status: a Task or a status update itself (v0.3, whose
# ``kind`` says which), or under the v1.0 member that names it.
_STATUS_HOLDERS = ("task", "statusUpdate", "status_update")


def _task_state(result: Any) -> str:
    """The task state a result reports ("" when none), v1.0 enum names read as v0.3's:
    ``TASK_STATE_INPUT_REQUIRED`` is ``input-required``."""
    if not isinstance(result, dict):
        return ""
    holders = [result, *(result.get(key) for key in _STATUS_HOLDERS)]
    for holder in holders:
        status = holder.get("status") if isinstance(holder, dict) else None
        state = status.get("state") if isinstance(status, dict) else None
        if isinstance(state, str) and state:
            return state.removeprefix("TASK_STATE_").lower().replace("_", "-")
    return ""
