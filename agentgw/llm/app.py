"""The LLMBackend responder: a Starlette app answering OpenAI and Anthropic clients.

The app serves, under whatever path the route sends it: ``GET …/v1/models`` and
``POST …/v1/chat/completions`` (OpenAI) and ``POST …/v1/messages`` (Anthropic). A request's
``model`` resolves through the :class:`Catalog` to priority groups of targets; each target is
called with the provider's key (the client's credentials never leave the gateway). Same format:
the body goes out byte for byte but for the ``model`` value, and the answer streams back as it
comes. Other format: the translators rewrite both ways, streams event by event.

Failover: a 429, a 5xx, a connect failure or a timeout before the provider's answer began moves
to the next target of the group, then to the next group; providers in ``Retry-After`` back-off
or ejected are skipped. Once bytes reached the client a failure ends the stream with an error
event in the client's format.
"""

from __future__ import annotations

import logging
import math
import random
import ssl
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agentgw.client_keys import ClientKey, match, presented
from agentgw.llm.asked_tools import ToolCallReader
from agentgw.llm.catalog import Catalog, Target
from agentgw.llm.formats import ClientFormat, LlmError, error_response, stream_error
from agentgw.llm.metrics import genai_operation, genai_provider
from agentgw.llm.pool import PoolCall
from agentgw.llm.pool import pick as pool_pick
from agentgw.llm.streaming import ProviderStream
from agentgw.llm.translate import UnsupportedField, chat_to_messages, messages_to_chat
from agentgw.llm.upstream import (
    CALL_ERRORS,
    LlmState,
    provider_headers,
    provider_path,
    release,
    retry_after,
    send,
)
from agentgw.llm.usage import Usage, UsageMeter, UsageStripper, split
from agentgw.toolcalls import caller_of
from gateway.protocols.sse import SseReader
from gateway.proxy.responder import PEER_IDENTITY
from inference_ext.rewrite.splice import replace_model

log = logging.getLogger("agentgw.llm")
_MAX_BODY = 32 << 20
_EPOCH = "1970-01-01T00:00:00Z"  # models have no creation date here
# Path ending -> operation. Completions and embeddings are OpenAI-only: relayed, not translated.
_OPERATIONS = (
    ("/v1/chat/completions", "chat"),
    ("/v1/messages", "messages"),
    ("/v1/completions", "completions"),
    ("/v1/embeddings", "embeddings"),
)


Account = Callable[[int], None]  # charges a finished answer's tokens to the client's key
# The answer is over: its usage, whether it was cut short, and the provider's first byte (in
# seconds from the call, streams only). Charges the budget, counts the metrics, notes them on
# the request's span and access-log line, and tells a pool's picker.
Ended = Callable[[Usage, bool, "float | None"], None]
Annotate = Callable[[str, "str | int | float | bool"], None]


def _no_annotation(key: str, value: str | int | float | bool) -> None:
    return None


class Finish:
    """Ends an answer (``finish(usage, aborted)``); ``chunk()`` marks each chunk the provider
    sent, the first one of a stream timing the answer's first token."""

    __slots__ = ("ended", "first", "started", "streaming", "tools")

    def __init__(self, started: float, ended: Ended, tools: ToolCallReader | None) -> None:
        self.started = started
        self.ended = ended
        self.first: float | None = None
        self.streaming = False
        self.tools = tools  # reads the tool calls asked for, when someone may carry them out

    def chunk(self) -> None:
        if self.first is None and self.streaming:
            self.first = time.perf_counter() - self.started

    def __call__(self, usage: Usage, aborted: bool) -> None:
        self.ended(usage, aborted, self.first)


@dataclass(slots=True)
class _Failure:
    status: int
    message: str
    retry_after: float | None = None


class LlmApp:
    """One LLMBackend as an ASGI app (built per compile; state shared through ``LlmState``)."""

    def __init__(
        self,
        name: str,
        catalog: Catalog,
        state: LlmState,
        keys: Sequence[ClientKey] = (),
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.catalog = catalog
        self.state = state
        self.keys = tuple(keys)
        self.rng = rng or random.Random()
        self.app = Starlette(routes=[Route("/{path:path}", self._handle, methods=["GET", "POST"])])

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self.app(scope, receive, send)

    async def _handle(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        # Anthropic's SDK sends anthropic-version on every call: /v1/models answers it in kind.
        anthropic = path.endswith("/v1/messages") or (
            path.endswith("/v1/models") and "anthropic-version" in request.headers
        )
        fmt = ClientFormat.ANTHROPIC if anthropic else ClientFormat.OPENAI
        try:
            if path.endswith("/v1/models") and request.method == "GET":
                self._authenticate(request, fmt)
                return self._models(fmt)
            operation = next((op for end, op in _OPERATIONS if path.endswith(end)), None)
            if request.method == "POST" and operation is not None:
                key = self._authenticate(request, fmt)
                return await self._generate(request, fmt, key, operation)
            raise LlmError(404, f"{request.method} {request.url.path} is not served here")
        except LlmError as error:
            return error_response(fmt, error)

    def _authenticate(self, request: Request, fmt: ClientFormat) -> ClientKey | None:
        if not self.keys:
            return None
        offered = presented(request.headers)
        if not offered:
            where = "x-api-key" if fmt is ClientFormat.ANTHROPIC else "Authorization"
            raise LlmError(401, f"missing API key: send it in the {where} header")
        key = match(self.keys, offered)
        if key is None:
            raise LlmError(401, "the API key is not valid for this gateway")
        return key

    def _models(self, fmt: ClientFormat) -> Response:
        """The configured models and virtual models (not wildcards), in the client's format."""
        names = self.catalog.listed
        listing: dict[str, Any]
        if fmt is ClientFormat.ANTHROPIC:
            data: list[dict[str, Any]] = [
                {"type": "model", "id": n, "display_name": n, "created_at": _EPOCH} for n in names
            ]
            first, last = (names[0], names[-1]) if names else (None, None)
            listing = {"data": data, "has_more": False, "first_id": first, "last_id": last}
        else:
            data = [
                {"id": n, "object": "model", "created": 0, "owned_by": self.name} for n in names
            ]
            listing = {"object": "list", "data": data}
        return Response(orjson.dumps(listing), media_type="application/json")

    def _admit(self, key: ClientKey | None) -> Account | None:
        """Count the request against ``key``'s budgets (429 when spent); how to charge tokens."""
        if key is None or (key.requests_per_minute is None and key.tokens_per_minute is None):
            return None
        budgets = self.state.budgets
        wait = budgets.admit(key.ident, key.requests_per_minute, key.tokens_per_minute)
        if wait > 0:
            raise LlmError(
                429,
                f"{key.who()} spent its budget; retry in {wait:.1f}s",
                headers={"retry-after": str(max(1, math.ceil(wait)))},
            )
        if key.tokens_per_minute is None:
            return None
        ident, limit = key.ident, key.tokens_per_minute
        return lambda tokens: budgets.charge(ident, limit, tokens)

    async def _generate(
        self, request: Request, fmt: ClientFormat, key: ClientKey | None, operation: str
    ) -> Response:
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise LlmError(413, f"the request body is over {_MAX_BODY} bytes")
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise LlmError(400, f"the request body is not JSON: {exc}") from exc
        if not isinstance(parsed, dict):
            raise LlmError(400, "the request body must be a JSON object")
        model = parsed.get("model")
        if not isinstance(model, str) or not model:
            raise LlmError(400, "model: a non-empty string is required", "model")
        groups = self.catalog.resolve(model, self.rng)
        if groups is None:
            raise LlmError(404, f"The model {model!r} does not exist", "model")
        account = self._admit(key)
        annotate: Annotate = request.scope.get("extensions", {}).get(
            "ambient.annotate", _no_annotation
        )
        annotate("llm.model", model)
        if key is not None:
            annotate("llm.key", key.ident[:12])
            if key.team:
                annotate("llm.team", key.team)
        client_headers = {k: v for k, v in request.headers.items()}
        peer = (request.scope.get("extensions") or {}).get(PEER_IDENTITY)
        caller = caller_of(client_headers, peer)  # whose tool calls an answer asks for
        last: _Failure | None = None
        for group in groups:
            candidates = [t for t in group if self.state.health.available(t.provider.name)]
            self.rng.shuffle(candidates)
            for target in candidates:
                outcome = await self._call(
                    fmt,
                    operation,
                    target,
                    body,
                    parsed,
                    client_headers,
                    account,
                    key,
                    caller,
                    annotate,
                )
                if isinstance(outcome, Response):
                    return outcome
                log.info("%s: model %r: %s; trying the next", self.name, model, outcome.message)
                last = outcome
        if last is None:
            raise LlmError(503, f"every provider of model {model!r} is backing off or ejected")
        headers = {}
        if last.retry_after is not None:
            headers["retry-after"] = str(int(last.retry_after + 0.999))
        return error_response(fmt, LlmError(last.status, last.message), headers)

    async def _call(
        self,
        fmt: ClientFormat,
        operation: str,
        target: Target,
        body: bytes,
        parsed: dict[str, Any],
        client_headers: dict[str, str],
        account: Account | None,
        key: ClientKey | None,
        caller: str | None,
        annotate: Annotate,
    ) -> Response | _Failure:
        provider = target.provider
        annotate("llm.provider", provider.name)
        annotate("gen_ai.provider.name", genai_provider(provider.type))
        annotate("gen_ai.operation.name", genai_operation(operation))
        annotate("gen_ai.request.model", target.model)
        same = (provider.type == "Anthropic") == (fmt is ClientFormat.ANTHROPIC)
        if operation in ("completions", "embeddings") and not same:
            raise LlmError(
                400,
                f"model: {parsed['model']!r} is served by {provider.type} provider "
                f"{provider.name}, which has no /v1/{operation}",
                "model",
            )
        try:
            ask_usage = same and _adds_usage(provider.type, operation, parsed)
            if same:
                content = replace_model(body, target.model)
                if ask_usage:
                    content = _with_usage(content, parsed, target.model)
            elif fmt is ClientFormat.OPENAI:
                content = orjson.dumps(chat_to_messages.request(parsed, target.model))
            else:
                content = orjson.dumps(messages_to_chat.request(parsed, target.model))
        except UnsupportedField as exc:
            raise LlmError(400, str(exc), exc.field) from exc
        url = provider_path(provider, operation)
        call: PoolCall | None = None
        tls = None
        if provider.pool is not None:
            path = url  # for a pool, provider_path is the path on the picked endpoint
            picked = await pool_pick(provider.pool, path, content, client_headers)
            if isinstance(picked, tuple):
                self.state.health.failed(provider.name)
                return _Failure(picked[0], f"provider {provider.name}: {picked[1]}")
            call, content, url = picked, picked.body, picked.url(path)
            tls = picked.endpoint.tls
        relay = same and account is None and not ask_usage
        headers = provider_headers(provider, client_headers, relay)
        metrics, started = self.state.metrics, time.perf_counter()
        try:
            upstream = await send(self.state.http(), url, content, headers, provider.timeout, tls)
        except CALL_ERRORS as exc:
            self.state.health.failed(provider.name)
            metrics.call(self.name, provider.name, target.model, 0)
            timeout = isinstance(exc, TimeoutError)
            if call is not None:
                call.end(0, ok=False, failure="timeout" if timeout else "connect_error")
            if timeout:
                return _Failure(504, f"provider {provider.name} timed out")
            return _Failure(502, f"provider {provider.name} unreachable ({_reason(exc)})")
        status = upstream.status
        metrics.call(self.name, provider.name, target.model, status)
        if call is not None:
            call.head_arrived()

        tools = ToolCallReader() if caller is not None else None

        def ended(usage: Usage, aborted: bool, ttft: float | None) -> None:
            if account is not None:
                account(usage.total)
            if tools is not None and caller is not None and not aborted:
                self._remember_tools(tools, caller, client_headers, annotate)
            seconds = time.perf_counter() - started
            metrics.answered(self.name, provider.name, target.model, usage)
            kind, system = genai_operation(operation), genai_provider(provider.type)
            self.state.genai.client_call(kind, system, target.model, seconds)
            if status < 400 and not aborted:
                self.state.genai.answer(
                    kind,
                    system,
                    target.model,
                    usage.model or target.model,
                    seconds,
                    ttft,
                    usage.input or None,
                    usage.output or None,
                )
            annotate("gen_ai.response.model", usage.model or target.model)
            annotate("gen_ai.usage.input_tokens", usage.input)
            annotate("gen_ai.usage.output_tokens", usage.output)
            if usage.cached:
                annotate("gen_ai.usage.cache_read.input_tokens", usage.cached)
            if target.price is not None:
                usd = target.cost(usage)
                team, ident = (key.team or "", key.ident[:12]) if key else ("", "")
                metrics.cost(self.name, provider.name, target.model, team, ident, usd)
                annotate("llm.cost_usd", round(usd, 9))
            if call is not None:
                call.end(status, ok=status < 500 and not aborted, aborted=aborted)

        finish = Finish(started, ended, tools)
        if status == 429 or status >= 500:
            upstream.close()
            if call is not None:
                call.end(status, ok=False)
            wait = retry_after(upstream.headers)
            self.state.health.failed(provider.name, wait)
            return _Failure(status, f"provider {provider.name} answered {status}", wait)
        self.state.health.succeeded(provider.name)
        media = upstream.headers.get("content-type", "application/json")
        streaming = media.startswith("text/event-stream")
        finish.streaming = streaming
        if same:
            encoding = upstream.headers.get("content-encoding")
            passed = {"content-encoding": encoding} if encoding else None
            meter = UsageMeter(streaming, encoding, tools)
            strip = UsageStripper() if ask_usage and streaming and not encoding else None
            relayed = self._relay(fmt, upstream, meter, finish, strip)
            return ProviderStream(relayed, status, passed, media)
        if status >= 400 or not streaming:
            try:
                raw = await upstream.read()
            except CALL_ERRORS as exc:
                upstream.close()
                finish(Usage(), True)
                broke = f"provider {provider.name}'s answer broke off ({_reason(exc)})"
                return _Failure(502, broke)
            release(upstream)
            try:
                answer = orjson.loads(raw) if status < 400 else None
                if tools is not None:
                    tools.answer(answer)
            except orjson.JSONDecodeError:
                answer = None
            finish(
                split(answer.get("usage"), answer.get("model") or "") if answer else Usage(), False
            )
            if status >= 400:
                return error_response(fmt, LlmError(status, _error_message(raw, provider.name)))
            if answer is None:
                return _Failure(502, f"provider {provider.name} answered {status} without JSON")
            if fmt is ClientFormat.OPENAI:
                translated = chat_to_messages.response(answer)
            else:
                translated = messages_to_chat.response(answer)
            return Response(orjson.dumps(translated), status, media_type="application/json")
        events = (
            self._to_openai(upstream, parsed, finish)
            if fmt is ClientFormat.OPENAI
            else self._to_anthropic(upstream, finish)
        )
        return ProviderStream(events, status, media_type="text/event-stream")

    def _remember_tools(
        self,
        tools: ToolCallReader,
        caller: str,
        client_headers: dict[str, str],
        annotate: Annotate,
    ) -> None:
        """Keep the tool calls the answer asked for, so the MCP calls carrying them out link
        to this request's span (``agentgw.toolcalls``)."""
        asked = tools.calls()
        traceparent = client_headers.get("traceparent")
        if not asked or not traceparent:
            return
        for call_id, name, arguments in asked:
            self.state.tool_calls.remember(caller, name, arguments, call_id, traceparent)
        annotate("gen_ai.tool.calls", len(asked))

    async def _relay(
        self,
        fmt: ClientFormat,
        upstream: aiohttp.ClientResponse,
        meter: UsageMeter,
        finish: Finish,
        strip: UsageStripper | None,
    ) -> AsyncIterator[bytes]:
        try:
            async for chunk in upstream.content.iter_any():
                finish.chunk()
                meter.feed(chunk)
                if strip is not None:
                    chunk = strip.feed(chunk)
                    if not chunk:
                        continue
                yield chunk
            if strip is not None and (rest := strip.flush()):
                yield rest
        except CALL_ERRORS as exc:
            yield stream_error(fmt, f"the provider's stream failed ({type(exc).__name__})")
        finally:
            finish(meter.tokens, not release(upstream))

    async def _to_openai(
        self, upstream: aiohttp.ClientResponse, parsed: dict[str, Any], finish: Finish
    ) -> AsyncIterator[bytes]:
        include = bool((parsed.get("stream_options") or {}).get("include_usage"))
        translator = chat_to_messages.ChatStream(include)
        reader = SseReader()
        try:
            async for chunk in upstream.content.iter_any():
                finish.chunk()
                for event in reader.feed(chunk):
                    payload = orjson.loads(event.data)
                    if finish.tools is not None:
                        finish.tools.event(payload)
                    for out in translator.feed(event.event, payload):
                        yield out
            for out in translator.finish():
                yield out
        except (*CALL_ERRORS, ValueError) as exc:
            yield stream_error(
                ClientFormat.OPENAI, f"the provider's stream failed ({type(exc).__name__})"
            )
        finally:
            finish(split(translator.usage, translator.model), not release(upstream))

    async def _to_anthropic(
        self, upstream: aiohttp.ClientResponse, finish: Finish
    ) -> AsyncIterator[bytes]:
        translator = messages_to_chat.MessagesStream()
        reader = SseReader()
        try:
            async for chunk in upstream.content.iter_any():
                finish.chunk()
                for event in reader.feed(chunk):
                    if event.data.strip() == "[DONE]":
                        continue
                    payload = orjson.loads(event.data)
                    if finish.tools is not None:
                        finish.tools.event(payload)
                    if "error" in payload:
                        for out in translator.error(payload["error"] or {}):
                            yield out
                        return
                    for out in translator.feed(payload):
                        yield out
            for out in translator.finish():
                yield out
        except (*CALL_ERRORS, ValueError) as exc:
            yield stream_error(
                ClientFormat.ANTHROPIC, f"the provider's stream failed ({type(exc).__name__})"
            )
        finally:
            finish(split(translator.usage, translator.model), not release(upstream))


def _adds_usage(provider_type: str, operation: str, parsed: dict[str, Any]) -> bool:
    """Whether a relayed OpenAI stream must ask for its usage: the client did not, and the
    gateway counts tokens (budgets, metrics, cost) from the provider's report alone."""
    if provider_type != "OpenAI" or operation not in ("chat", "completions"):
        return False
    options = parsed.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    return parsed.get("stream") is True and not asked


def _with_usage(content: bytes, parsed: dict[str, Any], model: str) -> bytes:
    """``content`` asking for ``stream_options.include_usage``: spliced in after the opening
    brace when the client sent no ``stream_options``, the body written anew when it did."""
    if "stream_options" not in parsed:
        brace = content.index(b"{") + 1
        return content[:brace] + b'"stream_options":{"include_usage":true},' + content[brace:]
    options = parsed["stream_options"] if isinstance(parsed["stream_options"], dict) else {}
    return orjson.dumps(
        {**parsed, "model": model, "stream_options": {**options, "include_usage": True}}
    )


def _reason(exc: BaseException) -> str:
    """Why a call failed before an answer: a TLS failure named as such, else the error type."""
    seen: BaseException | None = exc
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        seen = exc.certificate_error
    elif isinstance(exc, aiohttp.ClientSSLError):
        seen = exc.os_error
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return f"TLS: the certificate did not verify: {seen.verify_message}"
        if isinstance(seen, ssl.SSLError):
            return f"TLS: {seen.reason or seen}"
        seen = seen.__cause__ or seen.__context__
    return type(exc).__name__


def _error_message(raw: bytes, provider: str) -> str:
    """The message of a provider's error body, whatever its format."""
    try:
        error = orjson.loads(raw).get("error") or {}
        return str(error.get("message") or f"provider {provider} refused the request")
    except (orjson.JSONDecodeError, AttributeError):
        return f"provider {provider} refused the request"
