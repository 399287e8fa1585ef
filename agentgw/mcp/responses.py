"""What the MCP endpoint answers with: transport refusals, JSON-RPC messages, relayed SSE."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.responses import Response

log = logging.getLogger("agentgw.mcp")

_SSE_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_HEARTBEAT = b": keep-alive\n\n"
_BODY = {"type": "http.response.body", "more_body": True}
Item = dict[str, Any] | BaseException | None  # a message, a failure, the end


class HttpError(Exception):
    """A request refused at the transport: its HTTP status and JSON-RPC error."""

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.data = data


def json_response(
    body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    """A JSON-RPC message as an ``application/json`` response."""
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


def _event(message: dict[str, Any]) -> bytes:
    return b"event: message\ndata: " + orjson.dumps(message) + b"\n\n"


class SseRelay(Response):
    """An SSE response fed by a pump task: messages as events, heartbeats while quiet.

    The pump runs until it returns (``ends``: the stream ends too) or the client leaves (then
    it is cancelled); ``stack`` (the upstream exchange) closes when the response ends.
    """

    def __init__(
        self,
        pump: Callable[[asyncio.Queue[Item]], Awaitable[None]],
        heartbeat: float,
        stack: contextlib.AsyncExitStack,
        ends: bool = True,
    ) -> None:
        self.pump = pump
        self.heartbeat = heartbeat
        self.stack = stack
        self.ends = ends
        self.on_end: Callable[[], None] | None = None
        self.prelude = b""  # sent first (the legacy transport's endpoint event)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        queue: asyncio.Queue[Item] = asyncio.Queue()

        async def run_pump() -> None:
            try:
                await self.pump(queue)
            except Exception as exc:
                log.exception("mcp: relay failed")
                await queue.put(exc)
            if self.ends:
                await queue.put(None)

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            await queue.put(None)

        tasks = [asyncio.create_task(run_pump()), asyncio.create_task(watch())]
        try:
            await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
            if self.prelude:
                await send(_BODY | {"body": self.prelude})
            while True:
                try:
                    item = await asyncio.wait_for(queue.get(), self.heartbeat)
                except TimeoutError:
                    await send(_BODY | {"body": _HEARTBEAT})
                    continue
                if item is None or isinstance(item, BaseException):
                    break
                await send(_BODY | {"body": _event(item)})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client left
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.stack.aclose()
            if self.on_end is not None:
                self.on_end()
