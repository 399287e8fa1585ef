"""The HTTP/1.1 data path over loopback: framing, keep-alive, pipelining, headers, failure codes."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest

from gateway.demo.echo import EchoServer
from gateway.request import DirectResponse
from gateway.snapshot import SnapshotHolder
from tests.fixtures.proxy import (
    StaticBackend,
    choice,
    holder,
    raw_request,
    rule,
    snapshot,
    start_fixed_server,
)


@pytest.fixture
async def client(
    echo: EchoServer, gateway_factory, free_port: int
) -> AsyncIterator[httpx.AsyncClient]:
    """A client talking to a gateway that routes everything to ``echo``."""
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    )
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as c:
        yield c


async def test_keep_alive_reuses_client_and_upstream_connections(
    client: httpx.AsyncClient, echo: EchoServer
) -> None:
    for i in range(20):
        response = await client.get(f"/ka/{i}")
        assert response.status_code == 200
        assert response.json()["path"] == f"/ka/{i}"
    assert echo.stats.connections == 1  # one pooled upstream connection served all 20


async def test_query_string_and_host_pass_unchanged(client: httpx.AsyncClient) -> None:
    response = await client.get(
        "/q/a%20b?z=1&a=%2F&a=2&empty=&flag", headers={"host": "example.com:8080"}
    )
    body = response.json()
    assert body["path"] == "/q/a%20b?z=1&a=%2F&a=2&empty=&flag"
    assert body["host"] == "example.com:8080"


async def test_hop_by_hop_stripped_and_forwarding_headers_set(client: httpx.AsyncClient) -> None:
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    response = await client.get(
        "/h",
        headers={
            "connection": "keep-alive, x-secret",
            "x-secret": "drop me",
            "keep-alive": "timeout=5",
            "proxy-connection": "keep-alive",
            "te": "trailers",
            "trailer": "x-t",
            "upgrade": "h2c",
            "x-forwarded-for": "203.0.113.9",
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
            "x-keep": "yes",
        },
    )
    headers = response.json()["headers"]
    for name in ("x-secret", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"):
        assert name not in headers, name
    assert headers.get("connection") is None
    assert headers["x-keep"] == "yes"
    assert headers["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert len(headers["x-request-id"]) == 32
    version, trace, span, flags = headers["traceparent"].split("-")
    assert (version, trace, flags) == ("00", trace_id, "01")
    assert span != "00f067aa0ba902b7" and len(span) == 16


async def test_request_id_kept_and_new_trace_started(client: httpx.AsyncClient) -> None:
    headers = (await client.get("/rid", headers={"x-request-id": "abc-123"})).json()["headers"]
    assert headers["x-request-id"] == "abc-123"
    version, trace, span, _flags = headers["traceparent"].split("-")
    assert version == "00" and len(trace) == 32 and trace != "0" * 32 and len(span) == 16


async def test_response_hop_by_hop_removed(client: httpx.AsyncClient) -> None:
    response = await client.get("/chunked?chunks=4&size=5")
    assert response.content == b"yyyyy" * 4
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["x-echo-backend"] == "echo"


async def test_content_length_and_chunked_request_bodies(client: httpx.AsyncClient) -> None:
    payload = bytes(range(256)) * 1000
    response = await client.post("/body", content=payload)
    assert response.content == payload

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(10):
            yield bytes([i]) * 1000

    response = await client.post("/body", content=chunks())
    assert response.content == b"".join(bytes([i]) * 1000 for i in range(10))


async def test_large_response_streams_through(client: httpx.AsyncClient) -> None:
    response = await client.get("/bytes/5000000")
    assert len(response.content) == 5_000_000


async def test_head_request(client: httpx.AsyncClient) -> None:
    response = await client.head("/head")
    assert response.status_code == 200 and response.content == b""
    assert int(response.headers["content-length"]) > 0
    assert (await client.get("/after-head")).json()["path"] == "/after-head"


async def test_pipelined_requests_answered_in_order(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    )
    requests = b"".join(
        b"GET /p/%d?delay_ms=%d HTTP/1.1\r\nHost: x\r\n\r\n" % (i, (5 - i) * 20) for i in range(5)
    )
    body = b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    last = b"GET /p/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    data, closed = await raw_request(free_port, requests + body + last)
    assert closed
    paths = [json.loads(part)["path"] for part in _json_bodies(data)]
    assert paths == [f"/p/{i}?delay_ms={(5 - i) * 20}" for i in range(5)] + ["/p/last"]
    assert b"\r\n\r\nhello" in data
    assert data.index(b"hello") < data.index(b"/p/last")


async def test_expect_100_continue(echo: EchoServer, gateway_factory, free_port: int) -> None:
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
    writer.write(
        b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"
    )
    interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert interim.startswith(b"HTTP/1.1 100 Continue")
    writer.write(b"ping")
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"ping"
    writer.close()


async def test_http10_client(echo: EchoServer, gateway_factory, free_port: int) -> None:
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    )
    data, closed = await raw_request(free_port, b"GET /sse?events=2&interval_ms=1 HTTP/1.0\r\n\r\n")
    assert closed and data.startswith(b"HTTP/1.1 200")
    assert b"transfer-encoding" not in data.lower()
    assert data.count(b"data: ") == 2


async def test_404_500_503_answers(echo: EchoServer, gateway_factory, free_port: int) -> None:
    empty = StaticBackend("empty", [])
    rules = {
        "/ok": rule(choice(StaticBackend("echo", [echo.port]))),
        "/none": rule(),
        "/zero": rule(choice(StaticBackend("echo", [echo.port]), weight=0)),
        "/invalid": rule(choice(None, error='Service "default/missing" not found')),
        "/unready": rule(choice(empty)),
        "/redirect": rule(request_filters=(_Redirect(),)),
    }
    await gateway_factory(holder(free_port, rules))
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as client:
        response = await client.get("/missing")
        assert response.status_code == 404 and "no route" in response.text
        response = await client.get("/none")
        assert response.status_code == 500 and "no backend" in response.text
        response = await client.get("/zero")
        assert response.status_code == 500 and "no backend" in response.text
        response = await client.get("/invalid")
        assert response.status_code == 500 and "default/missing" in response.text
        response = await client.get("/unready")
        assert response.status_code == 503 and "no healthy upstream" in response.text
        response = await client.get("/redirect")
        assert (
            response.status_code == 302 and response.headers["location"] == "https://example.com/"
        )
        assert (await client.get("/ok")).status_code == 200  # the connection survived them all


async def test_weights_and_invalid_share(echo_factory, gateway_factory, free_port: int) -> None:
    v1, v2, v3 = [await echo_factory(n) for n in ("v1", "v2", "v3")]
    weighted = rule(
        choice(StaticBackend("v1", [v1.port]), weight=70),
        choice(StaticBackend("v2", [v2.port]), weight=30),
        choice(StaticBackend("v3", [v3.port]), weight=0),
    )
    half_invalid = rule(choice(StaticBackend("v1", [v1.port])), choice(None, error="bad ref"))
    await gateway_factory(holder(free_port, {"/w": weighted, "/half": half_invalid}))
    limits = httpx.Limits(max_connections=10)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{free_port}", timeout=5, limits=limits
    ) as c:

        async def hits(path: str) -> Counter[str]:
            """500 requests from 10 concurrent workers, counted by backend (or status)."""
            seen: Counter[str] = Counter()

            async def worker() -> None:
                for _ in range(50):
                    response = await c.get(path)
                    ok = response.status_code == 200
                    seen[response.json()["backend"] if ok else str(response.status_code)] += 1

            await asyncio.gather(*(worker() for _ in range(10)))
            return seen

        seen = await hits("/w")
        assert abs(seen["v1"] / 500 - 0.7) <= 0.05 and abs(seen["v2"] / 500 - 0.3) <= 0.05
        assert seen["v3"] == 0 and v3.stats.requests == 0
        halves = await hits("/half")
        assert abs(halves["500"] / 500 - 0.5) <= 0.05 and halves["500"] + halves["v1"] == 500


async def test_snapshot_swap_keeps_request_in_flight(
    echo_factory, gateway_factory, free_port: int
) -> None:
    old, new = await echo_factory("old"), await echo_factory("new")
    h: SnapshotHolder = holder(free_port, {"/": rule(choice(StaticBackend("old", [old.port])))})
    await gateway_factory(h)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as client:
        slow = asyncio.create_task(client.get("/slow?delay_ms=300"))
        await asyncio.sleep(0.1)
        h.current = snapshot(free_port, {"/": rule(choice(StaticBackend("new", [new.port])))}, 2)
        assert (await client.get("/fast")).json()["backend"] == "new"
        assert (await slow).json()["backend"] == "old"


class _Redirect:
    def apply(self, head: object) -> DirectResponse:
        return DirectResponse(302, [("location", "https://example.com/")])


def _json_bodies(data: bytes) -> list[bytes]:
    """Bodies of the JSON responses in a raw HTTP/1.1 stream of Content-Length responses."""
    bodies = []
    while data:
        head_end = data.index(b"\r\n\r\n")
        head = data[:head_end].decode()
        length = int(
            next(
                line.split(":")[1]
                for line in head.split("\r\n")
                if line.lower().startswith("content-length")
            )
        )
        body = data[head_end + 4 : head_end + 4 + length]
        data = data[head_end + 4 + length :]
        if body.startswith(b"{"):
            bodies.append(body)
    return bodies


@pytest.mark.parametrize(
    ("upstream_head", "client_sees"),
    [
        # Content-Length framing, no hop-by-hop field: the head reaches the client as received
        # (field order, case and duplicates included).
        (
            b"HTTP/1.1 200 OK\r\nX-Mixed-Case: v\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Content-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Mixed-Case: v\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Content-Length: 2\r\n\r\n",
        ),
        # A hop-by-hop field (and any field Connection names) is dropped: the head is rebuilt.
        (
            b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Private\r\nX-Private: p\r\n"
            b"X-Kept: k\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nX-Kept: k\r\nContent-Length: 2\r\n\r\n",
        ),
    ],
    ids=["verbatim", "rebuilt"],
)
async def test_response_head_passes_verbatim_unless_it_must_change(
    gateway_factory, free_port: int, upstream_head: bytes, client_sees: bytes
) -> None:
    server = await start_fixed_server(upstream_head + b"ok")
    port = server.sockets[0].getsockname()[1]
    try:
        await gateway_factory(
            holder(free_port, {"/": rule(choice(StaticBackend("fixed", [port])))})
        )
        request = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        received, closed = await raw_request(free_port, request, timeout=0.5)
        assert received == client_sees + b"ok" and not closed
        # A client that asks to close gets the same head plus "connection: close", then EOF.
        close = b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        received, closed = await raw_request(free_port, close)
        assert received.lower() == (client_sees[:-2] + b"connection: close\r\n\r\nok").lower()
        assert closed
    finally:
        server.close()


async def test_connection_close_answer_reaches_a_client_still_pipelining(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    """A request with ``Connection: close`` followed by more pipelined requests the client keeps
    sending: the gateway answers the first and closes with a lingering close, so the client
    reads the whole answer (then EOF) rather than a reset, every time."""
    await gateway_factory(
        holder(free_port, {"/": rule(choice(StaticBackend("echo", [echo.port])))})
    )
    first = b"GET /bytes/2000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    more = b"GET /p HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 1000 + b"\r\n\r\n"
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    for attempt in range(30):
        assert loop.time() < deadline, f"30 attempts took over 60 s (at {attempt})"
        reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
        try:
            writer.write(first)
            writer.write(more * 700)  # 700 KiB of pipelined requests, past the queue's bound
            await writer.drain()
            data = await asyncio.wait_for(reader.read(), 10)
        except ConnectionError as exc:
            raise AssertionError(f"attempt {attempt}: the answer was lost: {exc!r}") from exc
        finally:
            writer.close()
        assert data.startswith(b"HTTP/1.1 200 "), data[:100]
        assert data.endswith(b"\r\n\r\n" + b"x" * 2000), data[-100:]
