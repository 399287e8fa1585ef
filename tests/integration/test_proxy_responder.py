"""In-gateway responders: ASGI apps answering through the gateway, to HTTP/1.1 and HTTP/2 clients.

Each test runs a whole serving process (``GatewayProcess``) on loopback with apps of the test
responder plugin, once per client protocol (httpx over HTTP/1.1, httpx over h2c) and per event
loop (asyncio, uvloop).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from h2.errors import ErrorCodes
from h2.events import DataReceived, ResponseReceived, TrailersReceived
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.proxy.downstream import DownstreamConnection
from gateway.proxy.h2_downstream import StreamDown
from gateway.proxy.options import ProxyOptions
from gateway.proxy.responder import AsgiCall, ClientDisconnected
from tests.fixtures.otlp import Collector, collector, received_spans  # noqa: F401  (fixture)
from tests.fixtures.proxy import wait_for
from tests.fixtures.raw_h2 import RawH2
from tests.fixtures.responder_gateway import StartResponders

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)

Scope = dict[str, Any]
Message = dict[str, Any]


@pytest.fixture(params=["http1", "http2"])
def protocol(request: pytest.FixtureRequest) -> str:
    """The client's protocol."""
    return str(request.param)


def http_version(protocol: str) -> str:
    return "HTTP/2" if protocol == "http2" else "HTTP/1.1"


async def next_event(chunks: AsyncIterator[bytes], buffer: bytearray) -> bytes:
    """The next SSE event (up to its blank line) from a raw body stream."""
    while b"\n\n" not in buffer:
        buffer += await anext(chunks)
    event, _, rest = bytes(buffer).partition(b"\n\n")
    buffer[:] = rest
    return event


async def test_sse_events_arrive_as_the_app_sends_them(
    start_responders: StartResponders, responder_plugin: dict[str, Any], protocol: str
) -> None:
    # The app sends an event only when the test hands it one: the test reads each event before
    # it hands over the next, so nothing waits for the end of the stream.
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[str]:
            while (item := await queue.get()) is not None:
                yield f"data: {item}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream")

    responder_plugin["sse"] = Starlette(routes=[Route("/events", events)])
    gateway = await start_responders({"/": "sse"})
    async with gateway.client(protocol) as client, client.stream("GET", "/events") as response:
        assert response.status_code == 200
        assert response.http_version == http_version(protocol)
        assert response.headers["content-type"].startswith("text/event-stream")
        assert "content-length" not in response.headers
        chunks = response.aiter_raw()
        buffer = bytearray()
        for item in ("one", "two", "three"):
            await queue.put(item)
            assert await next_event(chunks, buffer) == f"data: {item}".encode()
        await queue.put(None)
        assert [chunk async for chunk in chunks] == []
    (entry,) = gateway.access_log()
    assert (entry["status"], entry["response_flags"]) == (200, "-")
    assert entry["response_bytes"] == len(b"data: one\n\ndata: two\n\ndata: three\n\n")


async def test_a_large_upload_to_a_slow_reader_is_read_with_backpressure(
    start_responders: StartResponders,
    responder_plugin: dict[str, Any],
    protocol: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = 50 * 1024 * 1024
    limit = 256 * 1024
    block = bytes(range(256)) * 256  # 64 KiB
    sizes: list[int] = []
    digest = hashlib.sha256()
    # Told when the gateway stops reading the client (HTTP/1.1: the socket; HTTP/2: the window).
    paused = asyncio.Event()
    for side in (DownstreamConnection, StreamDown):

        def spy(
            self: Any, key: object, pause: bool, original: Any = side.pause_reading_for
        ) -> None:
            if pause:
                paused.set()
            original(self, key, pause)

        monkeypatch.setattr(side, "pause_reading_for", spy)

    async def slow_reader(scope: Scope, receive: Any, send: Any) -> None:
        more = True
        while more:
            message = await receive()
            sizes.append(len(message["body"]))
            digest.update(message["body"])
            more = message["more_body"]
            if len(sizes) == 1:
                # Fall behind: read nothing more until the gateway has stopped reading the
                # client (were it to read on, the whole upload would pile up and this wait
                # would not end).
                await asyncio.wait_for(paused.wait(), 30)
        body = b"%d" % sum(sizes)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    async def upload() -> AsyncIterator[bytes]:
        for _ in range(total // len(block)):
            yield block

    responder_plugin["sink"] = slow_reader
    gateway = await start_responders({"/": "sink"}, ProxyOptions(max_buffered_body=limit))
    async with gateway.client(protocol, timeout=60) as client:
        response = await client.post("/upload", content=upload())
    assert (response.status_code, response.text) == (200, str(total))
    expected = hashlib.sha256()
    for _ in range(total // len(block)):
        expected.update(block)
    assert digest.hexdigest() == expected.hexdigest()
    # What the gateway held for the app at any time is what one receive() got: the limit plus
    # what was in flight when reading paused (a socket read, or the HTTP/2 stream window).
    assert max(sizes) <= limit + 512 * 1024
    (entry,) = gateway.access_log()
    assert (entry["request_bytes"], entry["status"]) == (total, 200)


def disconnect_watcher() -> tuple[Any, asyncio.Future[tuple[Message, BaseException | None]]]:
    """An app that streams one event, then waits in receive() for the client to leave and
    tries one more send; the future gets what receive() returned and what send() raised."""
    seen: asyncio.Future[tuple[Message, BaseException | None]] = asyncio.Future()

    async def stream(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        request = await receive()
        assert request == {"type": "http.request", "body": b"", "more_body": False}
        message = await receive()  # waits until the client leaves
        try:
            await send({"type": "http.response.body", "body": b"data: late\n\n", "more_body": True})
        except OSError as exc:
            seen.set_result((message, exc))
            raise
        seen.set_result((message, None))

    return stream, seen


async def test_the_app_sees_http_disconnect_when_the_client_leaves_mid_stream(
    start_responders: StartResponders, responder_plugin: dict[str, Any], protocol: str
) -> None:
    responder_plugin["stream"], seen = disconnect_watcher()
    gateway = await start_responders({"/": "stream"})
    async with gateway.client(protocol) as client, client.stream("GET", "/") as response:
        assert await next_event(response.aiter_raw(), bytearray()) == b"data: first"
    # The client closed its connection with the stream unfinished.
    message, error = await asyncio.wait_for(seen, 10)
    assert message == {"type": "http.disconnect"}
    assert isinstance(error, ClientDisconnected) and isinstance(error, OSError)
    (entry,) = gateway.access_log()
    assert (entry["status"], entry["response_flags"]) == (200, "DC")


async def test_an_http2_stream_reset_is_a_disconnect_and_the_connection_serves_on(
    start_responders: StartResponders, responder_plugin: dict[str, Any]
) -> None:
    responder_plugin["stream"], seen = disconnect_watcher()
    gateway = await start_responders({"/": "stream"})
    client = await RawH2.open(gateway.port)
    try:
        sid = client.request("/")
        await client.flush()
        await client.until(lambda e: isinstance(e, DataReceived) and e.stream_id == sid)
        client.conn.reset_stream(sid, ErrorCodes.CANCEL)
        await client.flush()
        message, error = await asyncio.wait_for(seen, 10)
        assert message == {"type": "http.disconnect"}
        assert isinstance(error, ClientDisconnected)
        other = client.request("/")
        await client.flush()
        response = await client.until(
            lambda e: isinstance(e, ResponseReceived) and e.stream_id == other
        )
        assert dict(response.headers)[b":status"] == b"200"
    finally:
        client.close()


def failing_apps() -> dict[str, Any]:
    """Apps that break the protocol or raise, each at a different point."""

    async def raises_first(scope: Scope, receive: Any, send: Any) -> None:
        raise ValueError("the secret detail")

    async def body_before_start(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.body", "body": b"oops"})

    async def start_twice(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.start", "status": 200, "headers": []})

    async def no_response(scope: Scope, receive: Any, send: Any) -> None:
        return None

    async def raises_mid_stream(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0)  # the first bytes leave before the failure
        raise KeyError("mid-stream")

    async def returns_mid_stream(scope: Scope, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        await asyncio.sleep(0)

    async def too_long(scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"3")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"four"})

    async def injects(scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"x-note", b"a\r\nset-cookie: stolen=1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"body"})

    async def too_short(scope: Scope, receive: Any, send: Any) -> None:
        headers = [(b"content-length", b"9")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b"four", "more_body": True})
        await asyncio.sleep(0)  # the first bytes leave before the end falls short
        await send({"type": "http.response.body", "body": b""})

    async def hello(request: Request) -> Response:
        return PlainTextResponse("still serving")

    return {
        "raises-first": raises_first,
        "body-before-start": body_before_start,
        "start-twice": start_twice,
        "no-response": no_response,
        "raises-mid-stream": raises_mid_stream,
        "returns-mid-stream": returns_mid_stream,
        "too-long": too_long,
        "too-short": too_short,
        "injects": injects,
        "hello": Starlette(routes=[Route("/hello", hello)]),
    }


async def test_app_failures_answer_500_or_cut_the_response_and_the_gateway_keeps_serving(
    start_responders: StartResponders,
    responder_plugin: dict[str, Any],
    protocol: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    apps = failing_apps()
    responder_plugin.update(apps)
    gateway = await start_responders({f"/{name}": name for name in apps})
    async with gateway.client(protocol) as client:
        for name, named in [
            ("raises-first", "raised ValueError"),
            ("body-before-start", "raised RuntimeError"),
            ("start-twice", "raised RuntimeError"),
            ("no-response", "returned without completing its response"),
            ("too-long", "raised RuntimeError"),  # caught before anything was sent
            ("injects", "raised RuntimeError"),  # a field that would split the head
        ]:
            response = await client.get(f"/{name}")
            assert response.status_code == 500, name
            assert response.text == f"AsgiApp default/{name} {named}\n"
            assert "secret" not in response.text and "set-cookie" not in response.headers
            assert (await client.get("/hello")).text == "still serving"
        for name in ("raises-mid-stream", "returns-mid-stream", "too-short"):
            with pytest.raises(httpx.HTTPError):
                # HTTP/1.1: the connection closes before the body ends; HTTP/2: a stream reset.
                await client.get(f"/{name}")
            assert (await client.get("/hello")).text == "still serving"
    logged = "\n".join(r.getMessage() + str(r.exc_info) for r in caplog.records)
    assert "the secret detail" in logged  # the details go to the log, not to the client
    cut = [e for e in gateway.access_log() if e["path"] == "/raises-mid-stream"]
    assert [(e["status"], e["response_flags"]) for e in cut] == [(200, "UC")]


async def test_the_scope_and_single_bodies(
    start_responders: StartResponders, responder_plugin: dict[str, Any], protocol: str
) -> None:
    scopes: list[Scope] = []

    async def app(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan
        scopes.append(scope)
        body = f"{scope['method']} {scope['path']} {scope['query_string'].decode()}".encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    responder_plugin["plain"] = app
    gateway = await start_responders({"/": "plain"})
    incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    async with gateway.client(protocol) as client:
        response = await client.get(
            "/a%20b/c?x=1", headers={"X-Custom": "Value", "traceparent": incoming}
        )
        assert response.text == "GET /a b/c x=1"
        # A single body the app gave no length: framed with one, in one write.
        assert response.headers["content-length"] == str(len(response.content))
        head = await client.head("/")
        assert (head.status_code, head.content) == (200, b"")
    scope = scopes[0]
    assert scope["asgi"] == {"version": "3.0", "spec_version": "2.4"}
    assert scope["http_version"] == ("2" if protocol == "http2" else "1.1")
    assert (scope["raw_path"], scope["root_path"], scope["scheme"]) == (b"/a%20b/c", "", "http")
    assert scope["client"][0] == "127.0.0.1" and scope["server"] == ("127.0.0.1", gateway.port)
    headers = scope["headers"]
    assert (b"x-custom", b"Value") in headers
    assert (b"host", f"127.0.0.1:{gateway.port}".encode()) in headers
    # As an upstream would: a traceparent continuing the client's trace, and the request id.
    (traceparent,) = [v for n, v in headers if n == b"traceparent"]
    assert traceparent.startswith(b"00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert traceparent != incoming.encode()
    (request_id,) = [v for n, v in headers if n == b"x-request-id"]
    assert request_id.decode() == gateway.access_log()[0]["request_id"]


async def test_responder_requests_are_counted_and_logged_like_proxied_ones(
    start_responders: StartResponders, responder_plugin: dict[str, Any]
) -> None:
    async def hello(request: Request) -> Response:
        await request.body()
        return PlainTextResponse("hello")

    responder_plugin["hello"] = Starlette(routes=[Route("/hi", hello, methods=["POST"])])
    gateway = await start_responders({"/": "hello"})
    for protocol in ("http1", "http2"):
        async with gateway.client(protocol) as client:
            assert (await client.post("/hi", content=b"12345")).text == "hello"
    families = await gateway.metrics()
    (sample,) = [s for s in families["istio_requests"].samples if s.name == "istio_requests_total"]
    assert sample.value == 2
    labels = sample.labels
    assert (labels["destination_service"], labels["destination_service_name"]) == (
        "hello.default.asgi",
        "hello",
    )
    assert (labels["destination_service_namespace"], labels["response_code"]) == ("default", "200")
    assert (labels["reporter"], labels["response_flags"]) == ("waypoint", "-")
    sums = {
        s.name: s.value
        for family in ("istio_request_bytes", "istio_response_bytes")
        for s in families[family].samples
        if s.name.endswith("_sum")
    }
    assert sums == {"istio_request_bytes_sum": 10, "istio_response_bytes_sum": 10}
    entries = gateway.access_log()
    assert [(e["status"], e["request_bytes"], e["response_bytes"]) for e in entries] == [
        (200, 5, 5),
        (200, 5, 5),
    ]
    for entry in entries:
        assert entry["destination"] == "hello.default.asgi"
        assert (entry["route"], entry["upstream"]) == ("default/hello/0", None)


async def test_http2_clients_get_the_apps_trailers(
    start_responders: StartResponders, responder_plugin: dict[str, Any]
) -> None:
    scopes: list[Scope] = []

    async def with_trailers(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan
        scopes.append(scope)
        start = {"type": "http.response.start", "status": 200, "trailers": True}
        await send({**start, "headers": [(b"content-type", b"application/grpc")]})
        await send({"type": "http.response.body", "body": b"payload"})
        await send({"type": "http.response.trailers", "headers": [(b"grpc-status", b"0")]})

    responder_plugin["trailers"] = with_trailers
    gateway = await start_responders({"/": "trailers"})
    client = await RawH2.open(gateway.port)
    try:
        sid = client.request("/call")
        await client.flush()
        trailers = await client.until(lambda e: isinstance(e, TrailersReceived))
        assert dict(trailers.headers) == {b"grpc-status": b"0"}
    finally:
        client.close()
    (scope,) = scopes
    assert scope["http_version"] == "2" and "http.response.trailers" in scope["extensions"]
    assert (b"host", b"h") in scope["headers"]  # :authority stands for Host
    # HTTP/1.1 clients have no trailers: the scope offers none, the body still arrives whole.
    async with gateway.client("http1") as http1:
        assert (await http1.get("/call")).content == b"payload"
    assert "http.response.trailers" not in scopes[1]["extensions"]
    assert scopes[1]["http_version"] == "1.1"
    assert sid == 1


async def test_expect_100_continue_and_pipelined_bodies_over_one_connection(
    start_responders: StartResponders, responder_plugin: dict[str, Any]
) -> None:
    async def echo_length(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan
        body = b""
        more = True
        while more:
            message = await receive()
            body += message["body"]
            more = message["more_body"]
        answer = b"%s %d" % (scope["path"].encode(), len(body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": answer})

    responder_plugin["echo"] = echo_length
    gateway = await start_responders({"/": "echo"})
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        # The client waits for 100 Continue, which the app's first receive() asks for.
        writer.write(
            b"POST /first HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
        # The body, then two pipelined requests with bodies in the same write: the second
        # and third wait their turn with their bodies held, and are answered in order.
        writer.write(
            b"hello"
            + b"POST /second HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
            + b"POST /third HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
            + b"4\r\nwxyz\r\n0\r\n\r\n"
        )
        answers = []
        for _ in range(3):
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            answers.append(await reader.readexactly(length))
        assert answers == [b"/first 5", b"/second 3", b"/third 4"]
    finally:
        writer.close()


async def test_a_route_timeout_answers_504_and_the_app_sees_the_disconnect(
    start_responders: StartResponders, responder_plugin: dict[str, Any], protocol: str
) -> None:
    seen: asyncio.Future[tuple[Message, BaseException | None]] = asyncio.Future()

    async def never_answers(scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # no lifespan
        await receive()  # the (empty) body
        message = await receive()  # until the exchange ends without a response
        try:
            await send({"type": "http.response.start", "status": 200, "headers": []})
        except OSError as exc:
            seen.set_result((message, exc))
            raise

    responder_plugin["slow"] = never_answers
    gateway = await start_responders({"/": "slow"}, rule_extra="timeouts: {request: 200ms}")
    async with gateway.client(protocol) as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (504, "request timeout\n")
    message, error = await asyncio.wait_for(seen, 10)
    assert message == {"type": "http.disconnect"} and isinstance(error, ClientDisconnected)
    (entry,) = gateway.access_log()
    assert (entry["status"], entry["response_flags"]) == (504, "UT")


async def test_a_fast_producer_waits_for_a_slow_client(
    start_responders: StartResponders,
    responder_plugin: dict[str, Any],
    protocol: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    total = 64 * 1024 * 1024
    chunk = b"x" * (64 * 1024)
    sent = 0
    # Told when the gateway makes the app's send() wait: the client stopped taking bytes.
    blocked = asyncio.Event()
    real_writable = AsgiCall.writable

    def writable(self: AsgiCall, can_write: bool) -> None:
        if not can_write:
            blocked.set()
        real_writable(self, can_write)

    monkeypatch.setattr(AsgiCall, "writable", writable)

    async def producer(scope: Scope, receive: Any, send: Any) -> None:
        nonlocal sent
        if scope["type"] != "http":
            return  # no lifespan
        await send({"type": "http.response.start", "status": 200, "headers": []})
        while sent < total:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sent += len(chunk)
        await send({"type": "http.response.body", "body": b""})

    responder_plugin["producer"] = producer
    gateway = await start_responders({"/": "producer"})
    async with (
        gateway.client(protocol, timeout=60) as client,
        client.stream("GET", "/") as response,
    ):
        chunks = response.aiter_raw()
        received = len(await anext(chunks))
        # The client reads nothing more until the gateway holds the app back ...
        await asyncio.wait_for(blocked.wait(), 30)
        # ... which it does long before the app produced everything: what is in flight is the
        # kernel's socket buffers, the HTTP/2 window and the gateway's high-water mark.
        assert sent - received < total // 2
        async for data in chunks:
            received += len(data)
    assert received == sent == total


@pytest.mark.parametrize("protocol", ["http1", "http2"])
async def test_an_app_annotates_the_requests_access_log_line(
    start_responders: StartResponders, responder_plugin: dict[str, Any], protocol: str
) -> None:
    async def annotating(scope: Any, receive: Any, send: Any) -> None:
        annotate = scope["extensions"]["ambient.annotate"]
        annotate("app.answer", "forty-two")
        annotate("app.tokens", 42)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    responder_plugin["annotating"] = annotating
    gateway = await start_responders({"/": "annotating"})
    async with gateway.client(protocol) as client:
        assert (await client.get("/a")).content == b"ok"
    (entry,) = gateway.access_log()
    assert entry["app.answer"] == "forty-two" and entry["app.tokens"] == 42


async def test_an_app_links_the_requests_span_to_another(
    start_responders: StartResponders,
    responder_plugin: dict[str, Any],
    collector: Collector,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    other = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

    async def linking(scope: Any, receive: Any, send: Any) -> None:
        scope["extensions"]["ambient.link"](other, {"why": "asked for it"})
        scope["extensions"]["ambient.link"]("not a traceparent", {})  # skipped, not fatal
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    responder_plugin["linking"] = linking
    gateway = await start_responders({"/": "linking"})
    async with gateway.client("http1") as client:
        assert (await client.get("/a")).content == b"ok"
    await wait_for(lambda: bool(received_spans(collector)))
    (span,) = received_spans(collector)
    (link,) = span.links
    assert link.trace_id.hex() == other[3:35] and link.span_id.hex() == other[36:52]
    assert {a.key: a.value.string_value for a in link.attributes} == {"why": "asked for it"}
