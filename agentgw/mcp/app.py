"""The MCP endpoint's HTTP edge: Streamable HTTP (protocol 2025-06-18 sessions) as an ASGI app.

Transport rules come first, each answered with its status and a JSON-RPC error naming the
problem: a method other than POST, GET and DELETE is 405; a POST whose ``Accept`` does not list
``application/json`` and ``text/event-stream`` (or a GET's the latter; ``*/*`` is not enough)
406; a body that is not ``application/json`` 415; a body over the cap 413; bad JSON, an unsupported
``MCP-Protocol-Version`` or a missing ``Mcp-Session-Id`` 400; a session id that does not open
or was ended (or is another principal's) 404. With authentication on, a request without a
valid bearer token or API key is 401 with a ``WWW-Authenticate`` challenge (pointing at the
RFC 9728 metadata this app serves when tokens are accepted). A request that came over the mesh
(HBONE mTLS, waypoint mode) carries its peer's SPIFFE id, which names the caller when it
presents no token or key. What passes goes to the :class:`Federation`.

Errors of a well-formed request (an unknown or denied tool, an unknown method, a failed target)
are JSON-RPC errors. To a session client they come with status 200: the research note's table
(agentgateway: 400 for a denial, 503 for a failed upstream) would end the session of the real
client, the 1.x ``mcp`` SDK, whose ``streamable_http_client`` calls ``raise_for_status()`` on
every POST answer but 202 and 404 in a task of its task group, so one 4xx or 5xx ends the whole
session (and 404 would tell it the session is gone). A stateless (2026-07-28) request stands
alone, so it gets the table's statuses (:func:`modern.status_of`): unknown or denied 400
(-32602), unknown method 404 (-32601), a target that failed 503. An upstream's own JSON-RPC
error is relayed as it came.

An upstream's SSE answer is relayed event by event with ``:`` comment heartbeats while it is
quiet. To a session client it is a resumable stream (:mod:`agentgw.mcp.streams`): events have
ids, a client that left comes back with ``GET`` + ``Last-Event-ID`` and gets what it missed. To
a stateless client (2026-07-28: no resumption, closing is cancelling) the client leaving closes
the upstream stream at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from agentgw.client_keys import presented
from agentgw.mcp import jsonrpc, modern, mrtr
from agentgw.mcp.authn import WELL_KNOWN, Authenticator, AuthError, metadata
from agentgw.mcp.authz import Caller
from agentgw.mcp.budgets import CallBudgets, retry_after
from agentgw.mcp.federation import COMPLETE, ROUTED, Federation
from agentgw.mcp.headers import check as check_headers
from agentgw.mcp.jsonrpc import Kind, Message, RpcError, classify
from agentgw.mcp.legacy import open_stream, post_message
from agentgw.mcp.merge import LISTS
from agentgw.mcp.responses import HttpError, SseRelay, json_response
from agentgw.mcp.sealing import SessionError, SessionState
from agentgw.mcp.streams import EventId, EventIdError, Sink, StreamResponse, lost_answer
from agentgw.mcp.upstream import UpstreamError
from agentgw.toolcalls import caller_of
from gateway.proxy.responder import PEER_IDENTITY

log = logging.getLogger("agentgw.mcp")

SUPPORTED_VERSIONS = ("2024-11-05", "2025-03-26", "2025-06-18", "2025-11-25")
SESSION_HEADER = "mcp-session-id"


@dataclass(slots=True)
class _Note:
    """What the metrics and the request's span say of one request, filled in on the way."""

    method: str
    target: str = ""
    tool: str = ""
    outcome: str = "ok"
    budgeted: str = ""  # the caller whose budget the call counts against, until it ends
    who: str | None = None  # the caller as LLM answers' tool calls were kept (agentgw.toolcalls)
    annotate: Callable[[str, str | int | float | bool], None] | None = None
    link: Callable[[str, dict[str, Any]], None] | None = None

    def tag(self, key: str, value: str) -> None:
        """An attribute of the request's span and access-log line (set as soon as known: a
        streamed answer's span ends with its stream)."""
        if self.annotate is not None:
            self.annotate(key, value)

    def session(self, session_id: str) -> None:
        """``mcp.session.id``: a digest of the id, not the id. The id is the sealed session, which
        resumes it for its principal: traces are no place for it, and it runs to hundreds of
        characters. The digest names the session alike in every span and log line."""
        if self.annotate is not None:
            digest = hashlib.sha256(session_id.encode()).hexdigest()[:32]
            self.annotate("mcp.session.id", digest)


# A stateless client's requests served by one target's answer, under an id of the gateway's and
# with MRTR rounds for what the target asks on the way.
_ONE_TARGET = mrtr.SUPPORTED | {COMPLETE}


@dataclass(frozen=True, slots=True)
class _Rounds:
    """What a stateless client's request says for MRTR: its capabilities, its retry fields;
    and the log level it opted in to (:func:`modern.log_level`)."""

    capabilities: dict[str, Any]
    retry: mrtr.Retry | None
    log_level: int | None


class McpApp:
    """One MCPBackend's endpoint (built per compile)."""

    def __init__(
        self,
        federation: Federation,
        max_message_bytes: int,
        heartbeat: float,
        auth: Authenticator | None = None,
        budgets: CallBudgets | None = None,
    ) -> None:
        self.federation = federation
        self.max_message_bytes = max_message_bytes
        self.heartbeat = heartbeat
        self.auth = auth
        self.budgets = budgets

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan: the gateway serves the app without one
        response = await self._handle(Request(scope, receive))
        await response(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        if request.url.path.startswith(WELL_KNOWN):
            try:
                return self._metadata(request)
            except HttpError as exc:
                return json_response(jsonrpc.error(None, exc.code, exc.message), exc.status)
        started = time.perf_counter()
        extensions = request.scope.get("extensions") or {}
        note = _Note(
            request.method,
            who=caller_of(request.headers, extensions.get(PEER_IDENTITY)),
            annotate=extensions.get("ambient.annotate"),
            link=extensions.get("ambient.link"),
        )
        response = await self._answer(request, note)
        if isinstance(response, SseRelay | StreamResponse):
            response.on_end = lambda: self._record(note, started)
        else:
            self._record(note, started)
        return response

    def _link_asked(self, note: _Note, arguments: Any) -> None:
        """When an LLM answer that passed through the gateway asked this caller for exactly
        this call, link the call's span to that answer's and name the tool call's id."""
        if note.who is None:
            return
        asked = self.federation.state.tool_calls.claim(note.who, note.tool, arguments)
        if asked is None:
            return
        if note.link is not None:
            note.link(asked.traceparent, {"gen_ai.tool.call.id": asked.call_id})
        note.tag("gen_ai.tool.call.id", asked.call_id)

    def _record(self, note: _Note, started: float) -> None:
        if note.budgeted and self.budgets is not None:
            self.budgets.done(note.budgeted)
        federation = self.federation
        seconds = time.perf_counter() - started
        federation.state.metrics.request(
            federation.name, note.method, note.target, note.tool, note.outcome, seconds
        )
        note.tag("mcp.outcome", note.outcome)  # a stream's span has ended by now: not on it

    async def _answer(self, request: Request, note: _Note) -> Response:
        try:
            caller = self._caller(request)
            path = request.url.path
            if path.endswith("/sse") and request.method == "GET":
                return await open_stream(self, request, caller)
            legacy = path.endswith("/messages") and "session_id" in request.query_params
            if legacy and request.method == "POST":
                return await post_message(self, request, caller)
            if request.method == "POST":
                return await self._post(request, caller, note)
            if request.method in ("GET", "DELETE") and modern.is_modern(request.headers):
                raise HttpError(
                    405,
                    jsonrpc.INVALID_REQUEST,
                    f"{request.method} is not part of MCP {modern.VERSION} (POST only)",
                    {"allow": "POST"},
                )
            if request.method == "GET":
                return await self._get(request, caller, note)
            if request.method == "DELETE":
                return await self._delete(request, caller, note)
            raise HttpError(
                405,
                jsonrpc.INVALID_REQUEST,
                f"method {request.method} is not allowed (POST, GET, DELETE)",
                {"allow": "GET, POST, DELETE"},
            )
        except HttpError as exc:
            note.outcome = "refused"
            body = jsonrpc.error(None, exc.code, exc.message, exc.data)
            return json_response(body, exc.status, exc.headers)
        except RpcError as exc:
            note.outcome = "refused" if exc.status >= 400 else "error"
            return json_response(exc.body(), exc.status)

    # -- checks -----------------------------------------------------------------------------

    def _caller(self, request: Request) -> Caller:
        """Who asks: the token's claims or the API key when authentication is on (else 401),
        the mesh peer's identity, the address and the agent id."""
        address = request.client.host if request.client else ""
        agent = request.headers.get("x-agent-id", "")
        peer = (request.scope.get("extensions") or {}).get(PEER_IDENTITY)
        if self.auth is None:
            return Caller({}, address, agent, None, peer)
        try:
            claims, key = self.auth.verify(request.headers)
        except AuthError as exc:
            base = f"{request.url.scheme}://{request.url.netloc}"
            error = "invalid_token" if presented(request.headers) else None
            headers = {"www-authenticate": self.auth.challenge(base, request.url.path, error)}
            raise HttpError(401, jsonrpc.INVALID_REQUEST, str(exc), headers) from exc
        return Caller(claims, address, agent, key, peer)

    def _metadata(self, request: Request) -> Response:
        """RFC 9728 protected-resource metadata (404 without authentication)."""
        if self.auth is None or self.auth.jwt is None or request.method != "GET":
            raise HttpError(404, jsonrpc.INVALID_REQUEST, "no protected-resource metadata here")
        base = f"{request.url.scheme}://{request.url.netloc}"
        path = request.url.path[len(WELL_KNOWN) :]
        return json_response(metadata(base, path, self.auth.jwt.issuer))

    @staticmethod
    def require_accept(request: Request, *types: str) -> None:
        """406 unless ``Accept`` lists each of ``types`` (with a weight above 0).

        Media ranges (``*/*``, ``text/*``) do not count: the transport says the types must be
        listed, the SDK's own server answers 406 without them (so a client the gateway let
        through would fail against the servers behind it), and the SDK clients and the
        examples' curl lines list both. A browser's ``fetch`` sends ``*/*`` unless told.
        """
        header = request.headers.get("accept", "")
        listed = set()
        for part in header.split(","):
            media, *params = (piece.strip() for piece in part.split(";"))
            weights = [p[2:] for p in params if p[:2].lower() == "q="]
            if not weights or weights[0] not in ("0", "0.0", "0.00", "0.000"):
                listed.add(media.lower())
        missing = [t for t in types if t not in listed]
        if missing:
            got = f"Accept {header!r}" if header else "no Accept header"
            raise HttpError(
                406,
                jsonrpc.INVALID_REQUEST,
                f"{got} lacks {' and '.join(missing)} (wildcards such as */* do not count); "
                f"Accept must list {' and '.join(types)}",
            )

    @staticmethod
    def _check_version(request: Request) -> None:
        version = request.headers.get("mcp-protocol-version")
        supported = (modern.VERSION, *SUPPORTED_VERSIONS)
        if version is not None and version not in supported:
            raise HttpError(
                400,
                modern.UNSUPPORTED_VERSION,
                f"MCP-Protocol-Version {version!r} is not supported "
                f"(supported: {', '.join(supported)})",
                data={"supported": list(supported), "requested": version},
            )

    @staticmethod
    def check_content_type(request: Request) -> None:
        """415 unless the body is ``application/json``."""
        content_type = request.headers.get("content-type", "")
        if content_type.split(";")[0].strip().lower() != "application/json":
            raise HttpError(
                415,
                jsonrpc.INVALID_REQUEST,
                f"Content-Type must be application/json, not {content_type or 'missing'!r}",
            )

    def _session(self, request: Request, caller: Caller, note: _Note) -> tuple[str, SessionState]:
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            raise HttpError(
                400,
                jsonrpc.INVALID_REQUEST,
                "the Mcp-Session-Id header is required (initialize first)",
            )
        state = self.federation.state
        try:
            if state.is_ended(session_id):
                raise SessionError("the session was ended")
            session = self.federation.sealer.open(session_id)
            if session.principal != caller.principal:
                raise SessionError("the session belongs to another principal")
            note.session(session_id)
            return session_id, session
        except SessionError as exc:
            raise HttpError(404, jsonrpc.INVALID_REQUEST, f"unknown session: {exc}") from exc

    async def read_body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_message_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():
                size += len(chunk)
                if size > self.max_message_bytes:
                    raise self._too_large()
                chunks.append(chunk)
        except ClientDisconnect as exc:
            raise HttpError(400, jsonrpc.INVALID_REQUEST, "the body ended early") from exc
        return b"".join(chunks)

    def _too_large(self) -> HttpError:
        return HttpError(
            413,
            jsonrpc.INVALID_REQUEST,
            f"the message is over the cap of {self.max_message_bytes} bytes",
        )

    # -- methods ----------------------------------------------------------------------------

    async def _post(self, request: Request, caller: Caller, note: _Note) -> Response:
        self.require_accept(request, "application/json", "text/event-stream")
        self.check_content_type(request)
        self._check_version(request)
        message = jsonrpc.parse(await self.read_body(request))
        note.method = message.method or "response"
        note.tag("mcp.method.name", note.method)
        check_headers(request.headers, message)
        federation = self.federation
        if modern.is_modern(request.headers):
            return await self._modern(request, message, caller, note)
        try:
            if message.kind is Kind.REQUEST and message.method == "initialize":
                session_id, body = await federation.initialize(message, caller)
                note.session(session_id)
                return json_response(body, headers={SESSION_HEADER: session_id})
            session_id, session = self._session(request, caller, note)
            if message.kind is Kind.NOTIFICATION:
                await federation.notify(session, message)
                return Response(status_code=202)
            if message.kind is Kind.RESPONSE:
                await federation.answer(session, message)
                return Response(status_code=202)
            return await self._request(session, message, caller, note, session_id=session_id)
        except RpcError as exc:
            exc.id = message.id
            note.outcome = "refused" if exc.status >= 400 else "error"
            return json_response(exc.body(), exc.status)
        except UpstreamError as exc:
            note.outcome = "error"
            federation.state.metrics.upstream_error(federation.name, exc.target)
            error = jsonrpc.error(message.id, jsonrpc.INTERNAL_ERROR, str(exc))
            return json_response(error)

    async def _modern(
        self, request: Request, message: Message, caller: Caller, note: _Note
    ) -> Response:
        """A stateless (2026-07-28) request, served in the session such clients share."""
        federation = self.federation
        try:
            modern.check(request.headers, message)
            rounds = _Rounds(
                modern.capabilities(message), mrtr.retry_of(message), modern.log_level(message)
            )
            message = modern.strip(message)
            session, merged = await federation.shared_session(modern.SHARED_CLIENT)
            if message.method == "server/discover":
                result = modern.discover(merged, SUPPORTED_VERSIONS)
                return json_response(jsonrpc.result(message.id, result))
            if message.kind is Kind.NOTIFICATION:
                await federation.notify(session, message)
                return Response(status_code=202)
            server = merged.get("serverInfo", {})

            def finish(answer: dict[str, Any]) -> dict[str, Any]:
                return modern.complete(answer, message.id, server)

            return await self._request(session, message, caller, note, finish, rounds=rounds)
        except RpcError as exc:
            exc.id = message.id
            note.outcome = "refused" if exc.status >= 400 else "error"
            return json_response(exc.body(), modern.status_of(exc))
        except UpstreamError as exc:
            note.outcome = "error"
            federation.state.metrics.upstream_error(federation.name, exc.target)
            error = jsonrpc.error(message.id, jsonrpc.INTERNAL_ERROR, str(exc))
            return json_response(error, modern.UPSTREAM_FAILED)

    async def _request(
        self,
        session: SessionState,
        message: Message,
        caller: Caller,
        note: _Note,
        finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        session_id: str | None = None,
        rounds: _Rounds | None = None,
    ) -> Response:
        """``message`` answered; ``session_id`` (a session client's) makes a streamed answer
        resumable, ``finish`` and ``rounds`` (a stateless client's) shape the answer for its
        era and turn upstream questions into MRTR rounds."""
        federation = self.federation
        method = message.method
        if method == "ping":
            return json_response(jsonrpc.result(message.id, {}))
        if method in LISTS:
            listed = await federation.answer_list(session, message, caller)
            if finish is not None:
                listed = finish({**listed, "result": modern.uncacheable(listed["result"])})
            return json_response(listed)
        if method == "logging/setLevel":
            await federation.notify(session, message)
            return json_response(jsonrpc.result(message.id, {}))
        if method not in ROUTED and method != COMPLETE:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, f"Method not found: {method}", 200)
        if method == "tools/call" and self.budgets is not None:
            wait = self.budgets.admit(caller.key)
            if wait is not None:
                raise HttpError(
                    429,
                    jsonrpc.INVALID_REQUEST,
                    f"tool call budget of {caller.key!r} exhausted; retry in {wait:.1f}s",
                    {"retry-after": retry_after(wait)},
                )
            note.budgeted = caller.key
        route = federation.route_completion if method == COMPLETE else federation.route
        target, upstream_request = await route(session, message, caller)
        note.target = target
        note.tag("mcp.target", target)
        if method == "tools/call":
            note.tool = str(message.params.get("name", ""))
            note.tag("gen_ai.tool.name", note.tool)
            self._link_asked(note, message.params.get("arguments"))
        if rounds is not None and finish is not None and method in _ONE_TARGET:
            return await self._rounds(
                session, target, upstream_request, message, caller, finish, rounds
            )
        stack = contextlib.AsyncExitStack()
        handed = False
        try:
            streaming, messages = await federation.relay(stack, session, target, upstream_request)
            if streaming:
                handed = True
                pump = self._pump(messages, message, note, finish)
                if session_id is None:
                    return SseRelay(pump, self.heartbeat, stack)
                replays = federation.state.replays
                stream = await replays.open(session_id, message.id, session.version, pump, stack)
                return StreamResponse(stream, -1, self.heartbeat)
            try:
                async for answer in messages:
                    if "error" in answer:
                        note.outcome = "error"
                    return json_response(finish(answer) if finish else answer)
            finally:
                await messages.aclose()
            raise UpstreamError(target, "the answer held no message")
        finally:
            if not handed:
                await stack.aclose()

    async def _rounds(
        self,
        session: SessionState,
        target: str,
        upstream_request: dict[str, Any],
        message: Message,
        caller: Caller,
        finish: Callable[[dict[str, Any]], dict[str, Any]],
        rounds: _Rounds,
    ) -> Response:
        """A stateless client's call that may take several rounds (:mod:`agentgw.mcp.mrtr`):
        the retry of a parked call continues it, anything else is a new upstream call."""
        federation = self.federation
        calls = federation.state.parked
        request = mrtr.digest(message)
        parked = None
        if rounds.retry is not None:
            handle = mrtr.open_state(
                federation.sealer, rounds.retry, caller.subject, request, message.id
            )
            parked = calls.take(handle)
            if parked is not None and parked.target == target:
                await mrtr.answer_retry(parked, rounds.retry)
            else:
                if parked is not None:
                    await parked.close("the retry went to another target")
                parked = None
                log.info(
                    "mcp %s: no call parked here for the retry; calling again", federation.name
                )
        if parked is None:
            # Stateless clients share the upstream session and pick their ids alone, so two may
            # use one id at once: upstream, the call has an id of the gateway's.
            upstream_request = {**upstream_request, "id": federation.state.next_id()}
            stack = contextlib.AsyncExitStack()
            try:
                streaming, messages = await federation.relay(
                    stack, session, target, upstream_request
                )
                if not streaming:  # a JSON answer: nothing was asked on the way
                    async for answer in messages:
                        return json_response(finish({**answer, "id": message.id}))
                    raise UpstreamError(target, "the answer held no message")
            except BaseException:
                await stack.aclose()
                raise

            async def send_answer(key: str, body: dict[str, Any]) -> None:
                reply = classify({"jsonrpc": "2.0", "id": key, **body})
                await federation.answer(session, reply)

            parked = mrtr.Parked(target, messages, stack, upstream_request["id"], send_answer)

        def park(call: mrtr.Parked) -> str:
            handle = calls.park(call)
            return mrtr.seal_state(federation.sealer, handle, caller.subject, request)

        current, request_id = parked, message.id
        assert request_id is not None  # a request, not a notification

        async def pump(sink: Sink) -> None:
            try:
                logs = modern.LogFilter(sink, rounds.log_level)
                await mrtr.relay_rounds(
                    current, logs, request_id, rounds.capabilities, finish, park
                )
            except asyncio.CancelledError:
                # The client closed the call's stream, which is how a stateless client cancels;
                # a session-era upstream stops only when told.
                await federation.cancel(session, current.target, current.upstream_id)
                raise

        return SseRelay(pump, self.heartbeat, contextlib.AsyncExitStack())

    def _pump(
        self,
        messages: AsyncGenerator[dict[str, Any], None],
        request: Message,
        note: _Note,
        finish: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> Callable[[Sink], Awaitable[None]]:
        async def pump(queue: Sink) -> None:
            try:
                async for answer in messages:
                    if answer.get("id") == request.id and "error" in answer:
                        note.outcome = "error"
                    await queue.put(finish(answer) if finish else answer)
            except UpstreamError as exc:
                note.outcome = "error"
                self.federation.state.metrics.upstream_error(self.federation.name, exc.target)
                await queue.put(jsonrpc.error(request.id, jsonrpc.INTERNAL_ERROR, str(exc)))

        return pump

    async def _get(self, request: Request, caller: Caller, note: _Note) -> Response:
        self.require_accept(request, "text/event-stream")
        self._check_version(request)
        session_id, session = self._session(request, caller, note)
        replays = self.federation.state.replays
        last = request.headers.get("last-event-id")
        if last:
            try:
                event = EventId.parse(last)
            except EventIdError as exc:
                raise HttpError(400, jsonrpc.INVALID_REQUEST, f"Last-Event-ID: {exc}") from exc
            stream = replays.find(session_id, event)
            if stream is not None and stream.holds_after(event.seq):
                return StreamResponse(stream, event.seq, self.heartbeat)
            why = "unknown to this gateway process or aged out of its replay buffer"
            if event.request is not None:
                log.info("mcp %s: cannot resume after %s: %s", self.federation.name, last, why)
                error = jsonrpc.error(
                    event.request,
                    jsonrpc.INTERNAL_ERROR,
                    f"the answer to request {event.request!r} is lost: event {last} is {why}; "
                    "call again",
                )
                return lost_answer(event, error)
            log.info("mcp %s: GET stream after %s: %s; a new one", self.federation.name, last, why)

        async def pump(sink: Sink) -> None:
            await self.federation.listen(session, sink)
            await asyncio.Event().wait()  # open (heartbeats) when no target has a GET stream

        closing = contextlib.AsyncExitStack()
        stream = await replays.open(session_id, None, session.version, pump, closing)
        return StreamResponse(stream, -1, self.heartbeat)

    async def _delete(self, request: Request, caller: Caller, note: _Note) -> Response:
        self._check_version(request)
        session_id, session = self._session(request, caller, note)
        await self.federation.terminate(session)
        await self.federation.state.replays.end(session_id)
        self.federation.state.end(session_id)
        self.federation.state.metrics.session(self.federation.name, "ended")
        return Response(status_code=200)
