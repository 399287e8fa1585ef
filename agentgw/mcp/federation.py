"""One virtual MCP server over many upstreams: what each client message becomes upstream.

The HTTP edge (:mod:`agentgw.mcp.app`) hands over checked messages and a session; this module
fans out (``initialize``, lists, notifications), routes (calls, reads, prompts, completions) to
the target that owns the name or URI, and rewrites what comes back: names and URIs for the
client, ids of requests upstreams send the client. Answers to those requests go back to the
upstream that asked, with its own id. Upstream sessions that expired are initialised again with
the client's original ``initialize`` params, and the request is sent once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, Sequence
from dataclasses import dataclass, field
from typing import Any

from agentgw.mcp import jsonrpc
from agentgw.mcp.authz import ANONYMOUS, Caller, Policy
from agentgw.mcp.jsonrpc import Id, Message, RpcError, classify
from agentgw.mcp.merge import LISTS, OMITTED_META, MergedList, merge_initialize, merge_list
from agentgw.mcp.names import IdError, Naming, downstream_id, upstream_id
from agentgw.mcp.sealing import Sealer, SessionState, now
from agentgw.mcp.state import McpState
from agentgw.mcp.streams import Sink
from agentgw.mcp.upstream import Reply, Target, UpstreamError, UpstreamSessionGone

log = logging.getLogger("agentgw.mcp")

MAX_PAGES = 256  # per upstream and list; an upstream paging forever is an error
# Routed methods -> (the param naming the owner, is it a URI, the list that tells owners).
ROUTED: dict[str, tuple[str, bool, str]] = {
    "tools/call": ("name", False, "tools/list"),
    "prompts/get": ("name", False, "prompts/list"),
    "resources/read": ("uri", True, "resources/list"),
    "resources/subscribe": ("uri", True, "resources/list"),
    "resources/unsubscribe": ("uri", True, "resources/list"),
}
COMPLETE = "completion/complete"
# A completion's ref type -> the routed method whose owner and rules it shares, and its key.
_REFS = {"ref/prompt": ("prompts/get", "name"), "ref/resource": ("resources/read", "uri")}
# List method -> what a rule sees it as, and the attribute naming it.
_KINDS: dict[str, tuple[str, str]] = {
    "tools/list": ("tool", "name"),
    "prompts/list": ("prompt", "name"),
    "resources/list": ("resource", "uri"),
    "resources/templates/list": ("resource", "uri"),
}


class UnknownName(RpcError):
    """A call names no tool, prompt or resource of any target (or one the caller may not see)."""

    def __init__(self, what: str, name: str, id: Id | None) -> None:
        super().__init__(jsonrpc.INVALID_PARAMS, f"Unknown {what}: {name}", 200, id)


@dataclass(slots=True)
class Federation:
    """One MCPBackend's targets behind one session."""

    name: str  # namespace/name of the MCPBackend
    upstreams: dict[str, Target]
    naming: Naming
    fail_open: bool
    sealer: Sealer
    state: McpState
    policy: Policy | None = None
    owners: dict[str, tuple[str, str]] = field(default_factory=dict)  # "method name" -> owner
    # The session stateless (2026-07-28) clients share, and its merged InitializeResult.
    shared: tuple[SessionState, dict[str, Any]] | None = None
    shared_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def shared_session(self, params: dict[str, Any]) -> tuple[SessionState, dict[str, Any]]:
        """The federated session stateless clients share (opened with ``params`` once)."""
        async with self.shared_lock:
            if self.shared is None:
                request = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": params}
                sealed, answer = await self.initialize(classify(request))
                session = self.sealer.open(sealed)
                self.shared = (session, answer["result"])
                self.state.keep_running(self.name, self.listen(session, _Unasked(self, session)))
            return self.shared

    # -- sessions --------------------------------------------------------------------------

    async def initialize(
        self, message: Message, caller: Caller = ANONYMOUS
    ) -> tuple[str, dict[str, Any]]:
        """Initialise every target; the session id and the merged InitializeResult."""
        params = message.params
        requested = params.get("protocolVersion")
        if not isinstance(requested, str):
            raise RpcError(jsonrpc.INVALID_PARAMS, "protocolVersion: expected a string", 200)
        names = list(self.upstreams)
        outcomes = await asyncio.gather(
            *(self._initialize_one(name, params) for name in names), return_exceptions=True
        )
        joined: list[tuple[str, str | None]] = []
        results: list[tuple[str, dict[str, Any]]] = []
        for name, outcome in zip(names, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, UpstreamError):
                    self.state.metrics.upstream_error(self.name, name)
                if not isinstance(outcome, UpstreamError | RpcError) or not self.fail_open:
                    raise _failed(outcome, message.id)
                log.warning("mcp %s: %s: left out of the session", self.name, outcome)
                continue
            session, result = outcome
            joined.append((name, session))
            results.append((name, result))
        if not joined:
            raise RpcError(jsonrpc.INTERNAL_ERROR, "no target could be initialised", 200)
        merged = merge_initialize(self.name, requested, results)
        self.state.metrics.session(self.name, "started")
        state = SessionState(
            merged["protocolVersion"], tuple(joined), dict(params), now(), caller.principal
        )
        return self.sealer.seal(state), jsonrpc.result(message.id, merged)

    async def _initialize_one(
        self, target: str, params: dict[str, Any]
    ) -> tuple[str | None, dict[str, Any]]:
        upstream = self.upstreams[target]
        id = self.state.next_id()
        request = {"jsonrpc": "2.0", "id": id, "method": "initialize", "params": params}
        async with upstream.exchange(self.state.http(), request, None, None) as reply:
            result = await _final(target, reply, id)
            session = reply.session_id
        version = result.get("protocolVersion")
        done = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        async with upstream.exchange(
            self.state.http(), done, session, version if isinstance(version, str) else None
        ) as ack:
            async for _ in ack.messages:
                pass
        return session, result

    async def terminate(self, session: SessionState) -> None:
        """End every upstream session of ``session``."""
        await asyncio.gather(
            *(
                self.upstreams[target].terminate(self.state.http(), current, session.version)
                for target in session.targets
                if (current := self._current(session, target)) is not None
            )
        )

    def _current(self, session: SessionState, target: str) -> str | None:
        return self.state.upstream_session(f"{self.name}/{target}", session.upstream(target))

    async def _open(
        self,
        stack: contextlib.AsyncExitStack,
        session: SessionState,
        target: str,
        message: dict[str, Any],
    ) -> Reply:
        """POST ``message`` to ``target`` in ``session``, initialising the upstream session
        again (once) if it expired."""
        upstream = self.upstreams[target]
        current = self._current(session, target)
        try:
            return await stack.enter_async_context(
                upstream.exchange(self.state.http(), message, current, session.version)
            )
        except UpstreamSessionGone:
            log.info("mcp %s: target %s: upstream session expired; initialising", self.name, target)
            fresh, _ = await self._initialize_one(target, session.client)
            original = session.upstream(target)
            if original is not None and fresh is not None:
                self.state.replace(f"{self.name}/{target}", original, fresh)
            return await stack.enter_async_context(
                upstream.exchange(self.state.http(), message, fresh, session.version)
            )

    # -- fan-out ----------------------------------------------------------------------------

    async def notify(self, session: SessionState, message: Message) -> None:
        """A client notification: to every target of the session."""
        await asyncio.gather(
            *(self._post(session, target, message.raw) for target in session.targets),
            return_exceptions=True,
        )

    async def answer(self, session: SessionState, message: Message) -> None:
        """The client's answer to a request an upstream sent: back to it, with its own id."""
        try:
            target, original = upstream_id(message.id)
        except IdError as exc:
            raise RpcError(jsonrpc.INVALID_REQUEST, str(exc)) from exc
        if target not in session.targets:
            raise RpcError(jsonrpc.INVALID_REQUEST, f"the id {message.id!r} names no target")
        await self._post(session, target, {**message.raw, "id": original})

    async def cancel(self, session: SessionState, target: str, request_id: Id) -> None:
        """Tell ``target`` that its request ``request_id`` is cancelled (its client left)."""
        params = {"requestId": request_id, "reason": "the client left"}
        cancelled = {"jsonrpc": "2.0", "method": "notifications/cancelled", "params": params}
        try:
            await self._post(session, target, cancelled)
        except UpstreamError as exc:
            log.info("mcp %s: %s: cancelling %r: %s", self.name, target, request_id, exc)

    async def _post(self, session: SessionState, target: str, raw: dict[str, Any]) -> None:
        async with contextlib.AsyncExitStack() as stack:
            reply = await self._open(stack, session, target, raw)
            async for _ in reply.messages:
                pass

    async def answer_list(
        self, session: SessionState, message: Message, caller: Caller = ANONYMOUS
    ) -> dict[str, Any]:
        """A list method answered from every target's every page, merged; what ``caller``
        may not use is left out."""
        merged = await self._merged(session, message.method, message.id, caller)
        array = LISTS[message.method][0]
        body: dict[str, Any] = {array: merged.items}
        if merged.omitted:
            body["_meta"] = {OMITTED_META: merged.omitted}
        return jsonrpc.result(message.id, body)

    async def _merged(
        self, session: SessionState, method: str, id: Id | None, caller: Caller | None
    ) -> MergedList:
        """Every target's list merged (filtered by the policy for ``caller`` unless None)."""
        targets = session.targets
        outcomes = await asyncio.gather(
            *(self._pages(session, target, method) for target in targets),
            return_exceptions=True,
        )
        pages: list[tuple[str, list[dict[str, Any]]]] = []
        failed: list[str] = []
        for target, outcome in zip(targets, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                if isinstance(outcome, UpstreamError):
                    self.state.metrics.upstream_error(self.name, target)
                if not isinstance(outcome, UpstreamError) or not self.fail_open:
                    raise _failed(outcome, id)
                failed.append(f"{target}: left out: {outcome}")
                continue
            pages.append((target, outcome))
        policy = self.policy
        allowed = None
        if policy is not None and caller is not None:
            kind, key = _KINDS[method]

            def allowed(target: str, original: str, exposed: str) -> bool:
                attributes: dict[str, Any] = {key: exposed, "target": target}
                attributes["upstream"] = original
                if kind == "tool":
                    attributes["arguments"] = {}
                return policy.allows(caller, kind, attributes)

        merged = merge_list(method, self.naming, pages, allowed)
        merged.omitted.extend(failed)
        for problem in merged.omitted:
            log.warning("mcp %s: %s: %s", self.name, method, problem)
        for exposed, owner in merged.owners.items():
            self.owners[f"{method} {exposed}"] = owner
        return merged

    async def _pages(self, session: SessionState, target: str, method: str) -> list[Any]:
        array = LISTS[method][0]
        items: list[Any] = []
        cursor: Any = None
        for _ in range(MAX_PAGES):
            request = {
                "jsonrpc": "2.0",
                "id": self.state.next_id(),
                "method": method,
                "params": {} if cursor is None else {"cursor": cursor},
            }
            try:
                result = await self._request(session, target, request)
            except _MethodNotFound:
                return items  # the upstream offers none of these
            page = result.get(array)
            if isinstance(page, list):
                items.extend(page)
            cursor = result.get("nextCursor")
            if not cursor:
                return items
        raise UpstreamError(target, f"{method}: more than {MAX_PAGES} pages")

    async def _request(
        self, session: SessionState, target: str, request: dict[str, Any]
    ) -> dict[str, Any]:
        async with contextlib.AsyncExitStack() as stack:
            reply = await self._open(stack, session, target, request)
            return await _final(target, reply, request["id"])

    # -- routing ----------------------------------------------------------------------------

    async def route(
        self, session: SessionState, message: Message, caller: Caller = ANONYMOUS
    ) -> tuple[str, dict[str, Any]]:
        """The target owning what ``message`` names, and the message as that target sees it.

        A tool's or prompt's owner comes from the lists (cached per compile, listed again on a
        miss), so a name no target lists is unknown here, prefixed or not, and never reaches an
        upstream. A prefixed URI names its owner (templates make URIs no list holds). What
        the policy denies ``caller`` is unknown too.
        """
        key, is_uri, list_method = ROUTED[message.method]
        name = message.params.get(key)
        if not isinstance(name, str):
            raise RpcError(jsonrpc.INVALID_PARAMS, f"params.{key}: expected a string", 200)
        owner = self.naming.owner_uri(name) if is_uri else None
        if owner is None or owner[0] not in session.targets:
            owner = await self._owner(session, list_method, name, message.id)
        target, upstream_name = owner
        if self.policy is not None:
            kind, attribute = _KINDS[list_method]
            attributes: dict[str, Any] = {attribute: name, "target": target}
            attributes["upstream"] = upstream_name
            if kind == "tool":
                arguments = message.params.get("arguments")
                attributes["arguments"] = arguments if isinstance(arguments, dict) else {}
            if not self.policy.allows(caller, kind, attributes):
                log.info("mcp %s: %s denied %s %s", self.name, caller.principal, kind, name)
                raise UnknownName(kind, name, message.id)
        params = {**message.params, key: upstream_name}
        return target, {**message.raw, "params": params}

    async def route_completion(
        self, session: SessionState, message: Message, caller: Caller = ANONYMOUS
    ) -> tuple[str, dict[str, Any]]:
        """The target owning what a ``completion/complete`` completes (its ``ref``: a prompt,
        or a resource template by its exposed URI) and the request as that target sees it;
        unknown or denied as a ``prompts/get`` or ``resources/read`` of the same name is."""
        ref = message.params.get("ref")
        kind = _REFS.get(str(ref.get("type"))) if isinstance(ref, dict) else None
        if not isinstance(ref, dict) or kind is None:
            expected = "params.ref: expected a ref/prompt or ref/resource object"
            raise RpcError(jsonrpc.INVALID_PARAMS, expected, 200)
        method, key = kind
        named = {"jsonrpc": "2.0", "id": message.id, "method": method}
        target, routed = await self.route(
            session, classify(named | {"params": {key: ref.get(key)}}), caller
        )
        upstream_ref = {**ref, key: routed["params"][key]}
        return target, {**message.raw, "params": {**message.params, "ref": upstream_ref}}

    async def _owner(
        self, session: SessionState, method: str, name: str, id: Id | None
    ) -> tuple[str, str]:
        """Who owns ``name``, from every list unfiltered (the caller's rights come after)."""
        owner = self.owners.get(f"{method} {name}")
        if owner is None or owner[0] not in session.targets:
            merged = await self._merged(session, method, id, None)
            owner = merged.owners.get(name)
        if owner is None:
            what = {"tools/list": "tool", "prompts/list": "prompt"}.get(method, "resource")
            raise UnknownName(what, name, id)
        return owner

    async def relay(
        self,
        stack: contextlib.AsyncExitStack,
        session: SessionState,
        target: str,
        request: dict[str, Any],
    ) -> tuple[bool, AsyncGenerator[dict[str, Any], None]]:
        """Send a routed request to ``target`` (open until ``stack`` closes): whether the
        answer streams, and its messages rewritten for the client."""
        reply = await self._open(stack, session, target, request)

        async def messages() -> AsyncGenerator[dict[str, Any], None]:
            async for message in reply.messages:
                yield self._downstream(target, request["method"], request["id"], message)

        return reply.streaming, messages()

    def _downstream(
        self, target: str, method: str, request_id: Id, message: dict[str, Any]
    ) -> dict[str, Any]:
        """An upstream's message as the client sees it."""
        if "method" in message:
            out = dict(message)
            if "id" in message:
                out["id"] = downstream_id(target, message["id"])
            params = message.get("params")
            if isinstance(params, dict):
                out["params"] = self._downstream_params(target, message["method"], params)
            return out
        if message.get("id") == request_id and method == "resources/read":
            result = message.get("result")
            if isinstance(result, dict) and isinstance(result.get("contents"), list):
                contents = [
                    {**c, "uri": self.naming.expose_uri(target, c["uri"])}
                    if isinstance(c, dict) and isinstance(c.get("uri"), str)
                    else c
                    for c in result["contents"]
                ]
                return {**message, "result": {**result, "contents": contents}}
        return message

    def _downstream_params(
        self, target: str, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        if method == "notifications/resources/updated" and isinstance(params.get("uri"), str):
            return {**params, "uri": self.naming.expose_uri(target, params["uri"])}
        if method == "notifications/cancelled" and "requestId" in params:
            return {**params, "requestId": downstream_id(target, params["requestId"])}
        return params

    async def listen(self, session: SessionState, sink: Sink) -> None:
        """Every target's GET stream, rewritten, into ``sink`` until they all end."""
        await asyncio.gather(
            *(self._listen_one(session, target, sink) for target in session.targets)
        )

    async def _listen_one(
        self,
        session: SessionState,
        target: str,
        sink: Sink,
    ) -> None:
        upstream = self.upstreams[target]
        current = self._current(session, target)
        try:
            async with upstream.listen(self.state.http(), current, session.version) as stream:
                if stream is None:
                    return
                async for message in stream:
                    await sink.put(self._downstream(target, "", "", message))
        except UpstreamError as exc:
            log.info("mcp %s: %s: GET stream ended: %s", self.name, target, exc)


@dataclass(slots=True)
class _Unasked:
    """The stream of the session stateless clients share: a request an upstream sends there,
    outside any call, cannot reach a stateless client (MRTR asks within a call), so it is
    refused at once rather than left waiting."""

    federation: Federation
    session: SessionState

    async def put(self, message: dict[str, Any]) -> None:
        if "method" not in message or "id" not in message:
            return
        error = {
            "code": jsonrpc.METHOD_NOT_FOUND,
            "message": f"{message['method']} outside a request cannot reach a stateless client: "
            "ask within the call (its related request id)",
        }
        reply = classify({"jsonrpc": "2.0", "id": message["id"], "error": error})
        try:
            await self.federation.answer(self.session, reply)
        except (RpcError, UpstreamError) as exc:
            log.info("mcp %s: refusing %s: %s", self.federation.name, message["method"], exc)


class _MethodNotFound(UpstreamError):
    """An upstream answered -32601."""


async def _final(target: str, reply: Reply, request_id: Id) -> dict[str, Any]:
    """The result of the response to ``request_id`` in ``reply``; other messages are dropped."""
    async for message in reply.messages:
        if message.get("id") != request_id or "method" in message:
            continue
        error = message.get("error")
        if isinstance(error, dict):
            if error.get("code") == jsonrpc.METHOD_NOT_FOUND:
                raise _MethodNotFound(target, f"method not found: {error.get('message')}")
            raise UpstreamError(target, f"error {error.get('code')}: {error.get('message')}")
        result = message.get("result")
        if not isinstance(result, dict):
            raise UpstreamError(target, "a response without a result object")
        return result
    raise UpstreamError(target, "the answer ended without a response")


def _failed(exc: BaseException, id: Id | None) -> BaseException:
    """The error a client gets when a target failed and the backend fails closed."""
    if isinstance(exc, RpcError):
        return exc
    if isinstance(exc, UpstreamError):
        return RpcError(jsonrpc.INTERNAL_ERROR, str(exc), 200, id)
    return exc


def targets_of(upstreams: Sequence[Target]) -> dict[str, Target]:
    """Upstreams by name, in configuration order."""
    return {upstream.name: upstream for upstream in upstreams}
