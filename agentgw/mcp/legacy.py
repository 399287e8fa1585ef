"""The legacy HTTP+SSE transport (MCP 2024-11-05) for old clients, at ``<path>/sse``.

``GET <path>/sse`` opens the client's stream; its first event (``endpoint``) names
``<path>/messages?session_id=<token>``, where the client POSTs its messages (202); every answer
and everything the targets say comes back on the stream. The token names the stream in this
process only (the transport has no way to resume elsewhere); the federated session behind it is
the same as Streamable HTTP clients get. Closing the stream ends the session.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from agentgw.mcp import jsonrpc
from agentgw.mcp.authz import Caller
from agentgw.mcp.federation import ROUTED
from agentgw.mcp.jsonrpc import Kind, Message, RpcError
from agentgw.mcp.merge import LISTS
from agentgw.mcp.responses import HttpError, SseRelay
from agentgw.mcp.sealing import SessionState
from agentgw.mcp.upstream import UpstreamError

if TYPE_CHECKING:
    from agentgw.mcp.app import McpApp

log = logging.getLogger("agentgw.mcp")


@dataclass(slots=True)
class LegacyStream:
    """One legacy client's stream: its queue, who opened it, the session once initialised."""

    queue: asyncio.Queue[Any]
    subject: str
    session_id: str | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


async def open_stream(app: McpApp, request: Request, caller: Caller) -> Response:
    """``GET <path>/sse``: a new stream, its endpoint first."""
    app.require_accept(request, "text/event-stream")
    streams = app.federation.state.legacy
    token = secrets.token_urlsafe(24)
    stream = LegacyStream(asyncio.Queue(), caller.principal)
    streams[token] = stream
    base = request.url.path[: -len("/sse")]
    endpoint = f"event: endpoint\ndata: {base}/messages?session_id={token}\n\n".encode()

    async def pump(queue: asyncio.Queue[Any]) -> None:
        try:
            while True:
                await queue.put(await stream.queue.get())
        finally:
            del streams[token]
            for task in list(stream.tasks):
                task.cancel()
            if stream.session_id is not None:
                with contextlib.suppress(Exception):
                    await app.federation.terminate(app.federation.sealer.open(stream.session_id))

    relay = SseRelay(pump, app.heartbeat, contextlib.AsyncExitStack(), ends=False)
    relay.prelude = endpoint
    return relay


async def post_message(app: McpApp, request: Request, caller: Caller) -> Response:
    """``POST <path>/messages?session_id=…``: 202; the answer goes on the stream."""
    token = request.query_params.get("session_id", "")
    stream = app.federation.state.legacy.get(token)
    if stream is None or stream.subject != caller.principal:
        raise HttpError(404, jsonrpc.INVALID_REQUEST, "unknown session: no such stream here")
    app.check_content_type(request)
    message = jsonrpc.parse(await app.read_body(request))
    federation = app.federation
    if message.kind is Kind.REQUEST and message.method == "initialize":
        stream.spawn(_initialize(app, stream, message, caller))
        return Response(status_code=202)
    if stream.session_id is None:
        raise HttpError(400, jsonrpc.INVALID_REQUEST, "initialize first")
    session = federation.sealer.open(stream.session_id)
    if message.kind is Kind.NOTIFICATION:
        await federation.notify(session, message)
        if message.method == "notifications/initialized":
            stream.spawn(federation.listen(session, stream.queue))
    elif message.kind is Kind.RESPONSE:
        await federation.answer(session, message)
    else:
        stream.spawn(_answer(app, stream, session, message, caller))
    return Response(status_code=202)


async def _initialize(app: McpApp, stream: LegacyStream, message: Message, caller: Caller) -> None:
    try:
        stream.session_id, body = await app.federation.initialize(message, caller)
    except RpcError as exc:
        exc.id = message.id
        body = exc.body()
    except UpstreamError as exc:
        body = jsonrpc.error(message.id, jsonrpc.INTERNAL_ERROR, str(exc))
    await stream.queue.put(body)


async def _answer(
    app: McpApp, stream: LegacyStream, session: SessionState, message: Message, caller: Caller
) -> None:
    """Every message of the answer to ``message``, onto the stream."""
    put: Callable[[dict[str, Any]], Awaitable[None]] = stream.queue.put
    federation = app.federation
    try:
        if message.method == "ping":
            await put(jsonrpc.result(message.id, {}))
        elif message.method in LISTS:
            await put(await federation.answer_list(session, message, caller))
        elif message.method == "logging/setLevel":
            await federation.notify(session, message)
            await put(jsonrpc.result(message.id, {}))
        elif message.method in ROUTED:
            target, upstream_request = await federation.route(session, message, caller)
            async with contextlib.AsyncExitStack() as stack:
                _, messages = await federation.relay(stack, session, target, upstream_request)
                async for answer in messages:
                    await put(answer)
        else:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {message.method}", 200)
    except RpcError as exc:
        exc.id = message.id
        await put(exc.body())
    except UpstreamError as exc:
        await put(jsonrpc.error(message.id, jsonrpc.INTERNAL_ERROR, str(exc)))
