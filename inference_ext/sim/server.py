"""The simulator's HTTP side: an asyncio + httptools protocol per connection, an engine per replica.

Paths: ``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models``,
``GET /metrics``, ``GET /health``. Requests on a keep-alive connection are answered in order; a
generation holds the connection until its last token.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import deque

import httptools
import orjson

from inference_ext.sim.config import SimConfig
from inference_ext.sim.driver import EngineDriver
from inference_ext.sim.engine import ContextTooLong, Engine, Sequence
from inference_ext.sim.metrics import Exposition
from inference_ext.sim.openai_api import ApiError, injected_error, parse_request, plan_answer
from inference_ext.sim.responses import JsonReply, Reply, StreamReply, json_response
from inference_ext.sim.tokenizer import text_prompt, token_prompt
from ports import bind_listener

log = logging.getLogger(__name__)

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    503: b"Service Unavailable",
}
_GENERATE = {b"/v1/chat/completions": True, b"/v1/completions": False}


def _error(exc: ApiError, close: bool) -> bytes:
    return json_response(exc.status, exc.body(), close, _REASONS.get(exc.status, b"Error"))


class SimProtocol(asyncio.Protocol):
    """One client connection of a replica."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.body: list[bytes] = []
        self.backlog: deque[tuple[bytes, bytes, bytes, bool]] = deque()
        self.seq: Sequence | None = None  # the generation this connection waits for
        self.delayed: asyncio.TimerHandle | None = None  # its submission, under a model delay
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.delayed is not None:  # the engine never saw it
            self.delayed.cancel()
            self.delayed, self.seq = None, None
        elif self.seq is not None:
            seq, self.seq = self.seq, None
            self.server.driver.abort(seq)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.write(_error(ApiError(400, "malformed HTTP request"), True))
            self.close()

    # -- httptools callbacks -------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.body = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # curl sends a large body only after "100 Continue" (or a second's wait).
        if name.lower() == b"expect" and value.lower() == b"100-continue":
            self.write(b"HTTP/1.1 100 Continue\r\n\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        request = (
            self.url,
            self.parser.get_method(),
            b"".join(self.body),
            self.parser.should_keep_alive(),
        )
        if self.seq is None and not self.backlog:
            self._handle(*request)
        else:
            self.backlog.append(request)

    # -- requests ------------------------------------------------------------------------------

    def _handle(self, url: bytes, method: bytes, body: bytes, keep_alive: bool) -> None:
        server = self.server
        close = not keep_alive
        path = url.partition(b"?")[0]
        chat = _GENERATE.get(path)
        if chat is not None:
            if method != b"POST":
                self.write(_error(ApiError(405, f"{path.decode()} takes POST"), close))
            else:
                self._generate(chat, body, close)
                if self.seq is not None:
                    return
        elif method != b"GET":
            self.write(_error(ApiError(405, f"{path.decode()} takes GET"), close))
        elif path == b"/metrics":
            text = server.exposition.render()
            self.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4; charset=utf-8\r\n"
                b"content-length: %d\r\n%b\r\n%b"
                % (len(text), b"connection: close\r\n" if close else b"", text)
            )
        elif path == b"/health":  # vLLM's: 200 and no body
            self.write(
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n%b\r\n"
                % (b"connection: close\r\n" if close else b"")
            )
        elif path == b"/v1/models":
            self.write(json_response(200, server.models_body, close))
        else:
            self.write(
                _error(ApiError(404, f"no route for {path.decode(errors='replace')}"), close)
            )
        if close:
            self.close()

    def _generate(self, chat: bool, body: bytes, close: bool) -> None:
        server = self.server
        config = server.config
        faults = server.faults
        try:
            request = parse_request(chat, body, config)
            if config.error_rate and faults.random() < config.error_rate:
                raise injected_error(faults.choice(config.error_codes))
            namespace = request.adapter or config.model
            model_error = config.model_error_rate_of(namespace)
            if model_error and faults.random() < model_error:
                raise injected_error(faults.choice(config.error_codes))
            if request.ids is None:
                prompt = text_prompt(request.text, namespace, config.block_size)
            else:
                prompt = token_prompt(request.ids, namespace, config.block_size)
            answer = plan_answer(request, prompt.tokens, config)
        except ApiError as exc:
            self.write(_error(exc, close))
            return
        server.requests += 1
        response_id = f"{'chatcmpl' if chat else 'cmpl'}-{server.tag}{server.requests:x}"
        reply: Reply
        if request.stream:
            reply = StreamReply(self, request, answer, response_id, int(time.time()), close)
        else:
            reply = JsonReply(self, request, answer, response_id, int(time.time()), close)
        stall_after = 0
        stalls = request.stream and config.stall_rate and answer.tokens > 1
        if stalls and faults.random() < config.stall_rate:
            stall_after = faults.randint(1, answer.tokens - 1)
        seq = Sequence(
            prompt,
            answer.tokens,
            reply,
            request.adapter,
            finish_reason=answer.engine_reason,
            stall_after=stall_after,
            stall_s=config.stall_ms * config.time_scale / 1000,
            request_id=response_id,
        )
        delay = config.model_delay_of(namespace)
        if delay:
            # Headers now, the engine later: the model's answers start ``delay`` later.
            self.seq = seq
            if isinstance(reply, StreamReply):
                self.write(reply.head())
            self.delayed = asyncio.get_running_loop().call_later(
                delay, self._submit_delayed, seq, close
            )
            return
        try:
            server.driver.submit(seq)
        except ContextTooLong as exc:  # plan_answer keeps within the context; this is a guard
            self.write(_error(ApiError(400, str(exc), code="context_length_exceeded"), close))
            return
        self.seq = seq
        if isinstance(reply, StreamReply):
            self.write(reply.head())

    def _submit_delayed(self, seq: Sequence, close: bool) -> None:
        """Hand a delayed generation to the engine."""
        self.delayed = None
        try:
            self.server.driver.submit(seq)
        except ContextTooLong:  # plan_answer keeps within the context: cannot happen
            self.close()

    # -- ReplyTarget ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        """Send bytes unless the connection is gone."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def reply_done(self, close: bool) -> None:
        """The generation's response is complete: close, or answer what was pipelined."""
        self.seq = None
        if close:
            self.close()
            return
        while self.backlog and self.seq is None and not self.closed:
            self._handle(*self.backlog.popleft())

    def close(self) -> None:
        """Close the connection (after what was written)."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


class SimServer:
    """One replica: its address, engine, counters and listening socket."""

    def __init__(self, config: SimConfig, index: int = 0) -> None:
        self.config = config
        self.index = index
        self.address = config.replica_host(index)
        self.port = config.port
        self.tag = f"r{index}-"
        self.engine = Engine(config, seed=f"{config.seed}/{index}/engine")
        self.exposition = Exposition(self.engine)
        # Failure injection draws in arrival order, so a retried request can succeed.
        self.faults = random.Random(f"{config.seed}/{index}/faults")
        self.requests = 0
        self.connections: set[SimProtocol] = set()
        self.models_body = _models_body(config)
        self.driver: EngineDriver  # made by start(), on the running loop
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        """``http://address:port``."""
        return f"http://{self.address}:{self.port}"

    async def start(self, port: int | None = None) -> None:
        """Listen on ``address`` and ``port`` (``config.port`` by default; 0 picks one)."""
        loop = asyncio.get_running_loop()
        self.driver = EngineDriver(self.engine, loop)
        sock = bind_listener(
            self.address, self.config.port if port is None else port, setting="--listen"
        )
        self._server = await loop.create_server(lambda: SimProtocol(self), sock=sock, backlog=4096)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, cut open connections and stop the engine's timer."""
        server, self._server = self._server, None
        if server is None:
            return  # never started, or closed already
        server.close()
        for protocol in list(self.connections):
            if protocol.transport is not None:
                protocol.transport.abort()
        await server.wait_closed()
        self.driver.close()


def _models_body(config: SimConfig) -> bytes:
    created = int(time.time())

    def card(name: str, parent: str | None) -> dict[str, object]:
        return {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "vllm",
            "root": name,
            "parent": parent,
            "max_model_len": config.max_model_len,
        }

    cards = [card(config.model, None)] + [card(name, config.model) for name in config.loras]
    return orjson.dumps({"object": "list", "data": cards})


async def start_sims(config: SimConfig, n: int = 1) -> list[SimServer]:
    """Start ``n`` replicas on consecutive addresses from ``config.host``, all on one port.

    With ``config.port == 0`` the first replica picks a free port and the others take the same
    one on their addresses.
    """
    servers: list[SimServer] = []
    try:
        for index in range(n):
            server = SimServer(config, index)
            await server.start(servers[0].port if servers else None)
            servers.append(server)
    except BaseException:
        for server in servers:
            await server.close()
        raise
    for server in servers:
        log.info("ambient sim: replica %d serving %s on %s", server.index, config.model, server.url)
    return servers
