"""MCP 2026-07-28 multi round-trip requests (MRTR) for stateless clients over session upstreams.

A stateless client cannot be sent requests. When an upstream asks the client something
(``sampling/createMessage``, ``elicitation/create``, ``roots/list``) during a stateless
client's ``tools/call``, ``prompts/get`` or ``resources/read``, the gateway ends that request
with an ``InputRequiredResult``: the upstream's requests in ``inputRequests`` under the ids the
gateway gives upstream requests (``<target>/<n|s>/<id>``), and a ``requestState`` sealed with
the backend's session key (AES-GCM) naming the parked call, the caller, a digest of the request
and an expiry. The upstream call stays open, parked in this process for
:data:`PARKED_SECONDS`. The client's retry (a new id, the same params plus ``inputResponses``
and the ``requestState``) sends each answer to the upstream as the response to its request and
relays the rest of the call: its result (``complete``), or the next question (``input_required``
again; a question the retry left unanswered is asked again).

An upstream asking for what the client did not declare (``_meta`` clientCapabilities) is
answered -32601 by the gateway. A ``requestState`` that does not open, is another caller's,
expired or belongs to another request is 400 with -32602. One whose parked call this process
does not hold (another replica, a restarted gateway) runs the request again as a new call: the
upstream asks again and the client gets a new ``InputRequiredResult``. A parked call nobody
continues has its questions answered with an error, so the upstream's tool ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentgw.mcp import jsonrpc
from agentgw.mcp.jsonrpc import Id, Message, RpcError
from agentgw.mcp.sealing import Sealer, SessionError
from agentgw.mcp.streams import Sink

log = logging.getLogger("agentgw.mcp")

SUPPORTED = frozenset({"tools/call", "prompts/get", "resources/read"})
# What an upstream may ask, and the client capability it needs.
ASKS = {
    "sampling/createMessage": "sampling",
    "elicitation/create": "elicitation",
    "roots/list": "roots",
}
PARKED_SECONDS = 60.0
_PURPOSE = b"/mrtr requestState"

Answer = Callable[[str, dict[str, Any]], Awaitable[None]]  # (key, result or error) upstream


@dataclass(frozen=True, slots=True)
class Retry:
    """What a retry carries: the sealed state and the client's answers by key."""

    state: str
    responses: dict[str, Any]


def retry_of(message: Message) -> Retry | None:
    """The retry fields of a stateless request (None without ``requestState``); RpcError when
    they are malformed."""
    params = message.params
    state = params.get("requestState")
    responses = params.get("inputResponses", {})
    if state is None:
        return None
    if not isinstance(state, str):
        raise RpcError(
            jsonrpc.INVALID_PARAMS, "params.requestState: expected a string", id=message.id
        )
    if not isinstance(responses, dict) or not all(isinstance(v, dict) for v in responses.values()):
        raise RpcError(
            jsonrpc.INVALID_PARAMS,
            "params.inputResponses: expected an object of result objects",
            id=message.id,
        )
    return Retry(state, responses)


def without_retry(message: Message) -> dict[str, Any]:
    """``message``'s params without the retry fields (what the upstream sees)."""
    return {k: v for k, v in message.params.items() if k not in ("requestState", "inputResponses")}


def digest(message: Message) -> str:
    """What identifies the request a state belongs to: its method and salient params."""
    params = {k: v for k, v in without_retry(message).items() if k != "_meta"}
    body = orjson.dumps([message.method, params], option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()[:32]


@dataclass(slots=True)
class Parked:
    """A call waiting for the client's answers: the rest of the upstream's messages, what
    keeps the exchange open, the questions asked, how to answer them upstream."""

    target: str
    messages: AsyncGenerator[dict[str, Any], None]
    stack: contextlib.AsyncExitStack
    upstream_id: Id  # the id the routed request has upstream (its final answer carries it)
    answer: Answer
    asked: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> the request
    timer: asyncio.TimerHandle | None = None

    async def close(self, reason: str) -> None:
        """Answer what is still asked with an error (the upstream's tool ends), then close."""
        for key in list(self.asked):
            error = {"code": jsonrpc.INTERNAL_ERROR, "message": reason}
            with contextlib.suppress(Exception):
                await self.answer(key, {"error": error})
        self.asked.clear()
        await self.stack.aclose()


class ParkedCalls:
    """This process's parked calls by handle, each for :data:`PARKED_SECONDS` at most."""

    def __init__(self) -> None:
        self.calls: dict[str, Parked] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def park(self, parked: Parked) -> str:
        handle = secrets.token_urlsafe(16)
        self.calls[handle] = parked
        loop = asyncio.get_running_loop()
        parked.timer = loop.call_later(PARKED_SECONDS, self._expire, handle)
        return handle

    def take(self, handle: str) -> Parked | None:
        parked = self.calls.pop(handle, None)
        if parked is not None and parked.timer is not None:
            parked.timer.cancel()
        return parked

    def _expire(self, handle: str) -> None:
        parked = self.calls.pop(handle, None)
        if parked is not None:
            log.info("mcp: parked call %s: no retry in %ss; ended", handle, PARKED_SECONDS)
            task = asyncio.ensure_future(parked.close("the client did not answer in time"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def stop(self) -> None:
        for handle in list(self.calls):
            parked = self.take(handle)
            if parked is not None:
                with contextlib.suppress(Exception):
                    await parked.close("the gateway stopped")


def seal_state(sealer: Sealer, handle: str, principal: str, request: str) -> str:
    """The ``requestState`` of a parked call."""
    expiry = int(time.time() + PARKED_SECONDS)
    return sealer.seal_value({"h": handle, "p": principal, "r": request, "x": expiry}, _PURPOSE)


def open_state(sealer: Sealer, retry: Retry, principal: str, request: str, id: Id | None) -> str:
    """The parked call's handle in ``retry``'s state; RpcError (400, -32602) unless it opens,
    is ``principal``'s, is not expired and belongs to this request."""
    try:
        state = sealer.open_value(retry.state, _PURPOSE)
    except SessionError as exc:
        raise RpcError(jsonrpc.INVALID_PARAMS, f"requestState: {exc}", id=id) from exc
    problem = None
    if state.get("p") != principal:
        problem = "it is another caller's"
    elif state.get("r") != request:
        problem = "it belongs to another request (method, name and arguments must be the same)"
    elif state.get("x", 0) < time.time():
        problem = "it expired"
    if problem is not None:
        raise RpcError(jsonrpc.INVALID_PARAMS, f"requestState: {problem}", id=id)
    return str(state["h"])


async def answer_retry(parked: Parked, retry: Retry) -> None:
    """Send the client's answers to the questions ``parked`` asked; those it left unanswered
    stay asked."""
    for key in list(parked.asked):
        response = retry.responses.get(key)
        if response is not None:
            await parked.answer(key, {"result": response})
            del parked.asked[key]


async def relay_rounds(
    parked: Parked,
    sink: Sink,
    request_id: Id,
    capabilities: dict[str, Any],
    finish: Callable[[dict[str, Any]], dict[str, Any]],
    park: Callable[[Parked], str],
) -> None:
    """Relay ``parked``'s messages to ``sink`` as the answer to ``request_id``: notifications as
    they come, then the final answer, or (the upstream asks the client) an input_required
    result, the call parked by ``park``. The exchange closes unless parked."""
    kept = False
    try:
        if not parked.asked:
            async for message in parked.messages:
                if "method" in message and "id" in message:
                    need = ASKS.get(message["method"])
                    if need is None or need not in capabilities:
                        error = {
                            "code": jsonrpc.METHOD_NOT_FOUND,
                            "message": f"the client does not support {message['method']}",
                        }
                        await parked.answer(message["id"], {"error": error})
                        continue
                    parked.asked[message["id"]] = {
                        "method": message["method"],
                        "params": message.get("params", {}),
                    }
                    break
                if "method" in message:
                    await sink.put(message)
                    continue
                if message.get("id") == parked.upstream_id:
                    await sink.put(finish({**message, "id": request_id}))
                    return
        if parked.asked:
            asked = dict(parked.asked)
            state = park(parked)
            kept = True
            result = {"resultType": "input_required", "inputRequests": asked, "requestState": state}
            await sink.put(finish(jsonrpc.result(request_id, result)))
            return
        error = jsonrpc.error(request_id, jsonrpc.INTERNAL_ERROR, "the upstream's answer ended")
        await sink.put(error)
    finally:
        if not kept:
            await parked.close("the request ended")
