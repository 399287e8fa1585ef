"""The h2c upstream engine and its pool: multiplexing, gRPC trailers, flow control, resets, GOAWAY.

The engine is :mod:`gateway.proxy.h2_client`. Real sockets on loopback: a grpcio server for
gRPC semantics and a scriptable h2 server (``tests/fixtures/grpc_peers.py``) for the rest. Waits
are on events, never on time.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from typing import cast

import grpc
import pytest

from gateway.backends.base import Endpoint
from gateway.proxy.h2_client import CONNECTION_WINDOW, STREAM_WINDOW, H2ClientStream
from gateway.proxy.options import PoolLimits
from gateway.proxy.pool import UpstreamPool
from gateway.proxy.upstream import CLOSED
from tests.fixtures.grpc_peers import (
    UNARY,
    EchoServicer,
    H2TestServer,
    echo_stubs,
    grpc_message,
    grpc_messages,
    grpc_request_headers,
    start_grpc_server,
)

WAIT = 10.0  # generous bound on every await: a hang fails instead of blocking the suite


class Owner:
    """Records what a stream reports; ``wait_for`` waits on any report, never on the clock."""

    def __init__(self, pause_on_head: bool = False) -> None:
        self.pause_on_head = pause_on_head
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = bytearray()
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self.informational: list[int] = []
        self.outcome: str | None = None  # "complete" or "lost:<reason>"
        self.flushes = 0
        self.write_paused: list[bool] = []
        self.order: list[str] = []
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        async def loop() -> None:
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(loop(), WAIT)

    async def wait_body(self, size: int) -> None:
        await self.wait_for(lambda: len(self.body) >= size)

    async def wait_messages(self, count: int) -> None:
        await self.wait_for(lambda: len(grpc_messages(bytes(self.body))) >= count)

    async def wait_flushes(self, count: int) -> None:
        await self.wait_for(lambda: self.flushes >= count)

    async def done(self) -> str:
        await self.wait_for(lambda: self.outcome is not None)
        assert self.outcome is not None
        return self.outcome

    def _note(self, what: str) -> None:
        self.order.append(what)
        self._changed.set()

    def upstream_informational(self, status: int) -> None:
        self.informational.append(status)
        self._note("informational")

    def upstream_head(
        self, conn: H2ClientStream, status: int, reason: bytes, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self.status, self.headers = status, list(headers)
        if self.pause_on_head:
            conn.pause_reading()
        self._note("head")

    def upstream_body(self, data: bytes) -> None:
        self.body += data
        self._note("body")

    def upstream_trailers(self, headers: list[tuple[bytes, bytes]]) -> None:
        self.trailers = list(headers)
        self._note("trailers")

    def upstream_complete(self, conn: H2ClientStream) -> None:
        self.outcome = "complete"
        self._note("complete")

    def upstream_lost(self, conn: H2ClientStream, reason: str) -> None:
        self.outcome = f"lost:{reason}"
        self._note("lost")

    def upstream_flush(self) -> None:
        self.flushes += 1
        self._changed.set()

    def upstream_write_paused(self, paused: bool) -> None:
        self.write_paused.append(paused)
        self._changed.set()


def _h2(port: int) -> Endpoint:
    return Endpoint("127.0.0.1", port, "h2c")


def _get(port: int, path: str, method: bytes = b"GET") -> list[tuple[bytes, bytes]]:
    return [
        (b":method", method),
        (b":scheme", b"http"),
        (b":authority", f"127.0.0.1:{port}".encode()),
        (b":path", path.encode()),
    ]


async def _stream(pool: UpstreamPool, endpoint: Endpoint) -> H2ClientStream:
    """A stream from the pool: a free slot at once, or through a (possibly shared) dial."""
    stream = pool.acquire(endpoint)
    if stream is not None:
        assert isinstance(stream, H2ClientStream)
        return cast(H2ClientStream, stream)
    got: asyncio.Future[H2ClientStream] = asyncio.get_running_loop().create_future()

    def connected(conn: object, error: BaseException | None) -> None:
        if error is not None:
            got.set_exception(error)
        else:
            assert isinstance(conn, H2ClientStream)
            got.set_result(cast(H2ClientStream, conn))

    pool.connect(endpoint, connected)
    return await asyncio.wait_for(got, WAIT)


async def _request(
    pool: UpstreamPool,
    endpoint: Endpoint,
    path: str,
    body: bytes | None = None,
    owner: Owner | None = None,
) -> tuple[H2ClientStream, Owner]:
    stream = await _stream(pool, endpoint)
    owner = owner or Owner()
    stream.owner = owner
    method = b"POST" if body is not None else b"GET"
    stream.send_request(_get(endpoint.port, path, method), end_stream=body is None)
    if body is not None:
        stream.send_data(body, end_stream=True)
    return stream, owner


@pytest.fixture
async def h2server() -> AsyncIterator[H2TestServer]:
    server = H2TestServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def pool() -> AsyncIterator[UpstreamPool]:
    pool = UpstreamPool(PoolLimits(), 5.0)
    yield pool
    pool.close()


@pytest.fixture
def grpc_peer() -> Iterator[tuple[EchoServicer, int]]:
    servicer = EchoServicer()
    server, port = start_grpc_server(servicer)
    yield servicer, port
    server.stop(None)


# -- multiplexing ------------------------------------------------------------------------------


async def test_concurrent_requests_share_one_connection(
    h2server: H2TestServer, pool: UpstreamPool
) -> None:
    endpoint = _h2(h2server.port)
    # 50 first requests at once queue on one dial; 50 more find slots on the open connection.
    first = await asyncio.gather(
        *(_request(pool, endpoint, "/echo", f"a{i}".encode()) for i in range(50))
    )
    second = await asyncio.gather(
        *(_request(pool, endpoint, "/echo", f"b{i}".encode()) for i in range(50))
    )
    for prefix, batch in ((b"a", first), (b"b", second)):
        for i, (_, owner) in enumerate(batch):
            assert await owner.done() == "complete"
            assert (owner.status, bytes(owner.body)) == (200, prefix + b"%d" % i)
    assert len(h2server.connections) == 1
    assert pool.stats()[str(endpoint)] == {"open": 1, "idle": 1, "streams": 0}


async def test_peer_stream_limit_opens_a_second_connection(pool: UpstreamPool) -> None:
    server = H2TestServer(max_concurrent_streams=2)
    await server.start()
    try:
        endpoint = _h2(server.port)
        held = await asyncio.gather(*(_request(pool, endpoint, "/hold") for _ in range(3)))
        arrived = [await asyncio.wait_for(server.arrivals.get(), WAIT) for _ in range(3)]
        assert len(server.connections) == 2
        assert sorted(len(c.streams) for c in server.connections) == [1, 2]
        for stream in arrived:
            stream.respond(200, end=True)
        for _, owner in held:
            assert await owner.done() == "complete"
    finally:
        await server.close()


# -- gRPC against grpcio -----------------------------------------------------------------------


async def test_grpc_unary_delivers_trailers(
    grpc_peer: tuple[EchoServicer, int], pool: UpstreamPool
) -> None:
    _, port = grpc_peer
    stream = await _stream(pool, _h2(port))
    owner = Owner()
    stream.owner = owner
    headers = grpc_request_headers(f"127.0.0.1:{port}", UNARY, [("x-hello", "world")], "5S")
    stream.send_request(headers, end_stream=False)
    stream.send_data(grpc_message(b"ping"), end_stream=True)
    assert await owner.done() == "complete"
    assert owner.status == 200
    head = dict(owner.headers)
    assert head[b"content-type"] == b"application/grpc"
    assert head[b"x-hello"] == b"world"
    assert grpc_messages(bytes(owner.body)) == [b"ping"]
    assert owner.trailers is not None
    trailers = dict(owner.trailers)
    assert trailers[b"grpc-status"] == b"0"
    assert trailers[b"x-trailer"] == b"yes"
    assert 0 < int(trailers[b"x-deadline-ms"]) <= 5000
    assert owner.order[-2:] == ["trailers", "complete"]


async def test_grpc_error_status_arrives(
    grpc_peer: tuple[EchoServicer, int], pool: UpstreamPool
) -> None:
    _, port = grpc_peer
    stream = await _stream(pool, _h2(port))
    owner = Owner()
    stream.owner = owner
    stream.send_request(grpc_request_headers(f"127.0.0.1:{port}", UNARY), end_stream=False)
    stream.send_data(grpc_message(b"fail"), end_stream=True)
    assert await owner.done() == "complete"
    # Trailers-only (grpc-status in the head, no trailers) or head + trailers: both are gRPC.
    fields = dict(owner.trailers if owner.trailers is not None else owner.headers)
    assert fields[b"grpc-status"] == b"5"
    assert b"no echo" in fields[b"grpc-message"]


async def test_grpc_calls_share_one_connection(
    grpc_peer: tuple[EchoServicer, int], pool: UpstreamPool
) -> None:
    servicer, port = grpc_peer

    async def call(i: int) -> Owner:
        stream = await _stream(pool, _h2(port))
        owner = Owner()
        stream.owner = owner
        stream.send_request(grpc_request_headers(f"127.0.0.1:{port}", UNARY), end_stream=False)
        stream.send_data(grpc_message(b"%d" % i), end_stream=True)
        await owner.done()
        return owner

    owners = await asyncio.gather(*(call(i) for i in range(20)))
    assert [grpc_messages(bytes(o.body)) for o in owners] == [[b"%d" % i] for i in range(20)]
    assert len(servicer.peers) == 1


async def test_grpc_bidi_streams_each_message_both_ways(
    grpc_peer: tuple[EchoServicer, int], pool: UpstreamPool
) -> None:
    _, port = grpc_peer
    stream = await _stream(pool, _h2(port))
    owner = Owner()
    stream.owner = owner
    stream.send_request(
        grpc_request_headers(f"127.0.0.1:{port}", "/echo.Echo/Bidi"), end_stream=False
    )
    for i in range(5):
        # The echo of message i arrives while the request is still open: full duplex.
        stream.send_data(grpc_message(b"m%d" % i))
        await owner.wait_messages(i + 1)
    stream.end_request()
    assert await owner.done() == "complete"
    assert grpc_messages(bytes(owner.body)) == [b"m%d" % i for i in range(5)]
    assert owner.trailers is not None and dict(owner.trailers)[b"grpc-status"] == b"0"


async def test_grpc_server_and_client_streaming(
    grpc_peer: tuple[EchoServicer, int], pool: UpstreamPool
) -> None:
    _, port = grpc_peer
    authority = f"127.0.0.1:{port}"
    down = await _stream(pool, _h2(port))
    down_owner = Owner()
    down.owner = down_owner
    headers = grpc_request_headers(authority, "/echo.Echo/ServerStream", [("x-count", "4")])
    down.send_request(headers, end_stream=False)
    down.send_data(grpc_message(b"hi"), end_stream=True)
    up = await _stream(pool, _h2(port))
    up_owner = Owner()
    up.owner = up_owner
    up.send_request(grpc_request_headers(authority, "/echo.Echo/ClientStream"), end_stream=False)
    for part in (b"a", b"b", b"c"):
        up.send_data(grpc_message(part))
    up.end_request()
    assert await down_owner.done() == "complete"
    assert grpc_messages(bytes(down_owner.body)) == [b"hi"] * 4
    assert await up_owner.done() == "complete"
    assert grpc_messages(bytes(up_owner.body)) == [b"abc"]


async def test_grpc_fixture_answers_a_real_grpc_client(
    grpc_peer: tuple[EchoServicer, int],
) -> None:
    _, port = grpc_peer
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stubs = echo_stubs(channel)
        call = stubs.unary(b"hi", metadata=(("x-a", "1"),), timeout=5)
        assert await call == b"hi"
        assert ("x-a", "1") in tuple(await call.initial_metadata())
        trailing = dict(await call.trailing_metadata())
        # grpcio's server may see a few ms more than the client's 5 s (its timer rounds up).
        assert trailing["x-trailer"] == "yes" and 0 < int(trailing["x-deadline-ms"]) <= 5100
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stubs.unary(b"fail")
        assert failed.value.code() == grpc.StatusCode.NOT_FOUND
        streamed = stubs.server_stream(b"s", metadata=(("x-count", "2"),))
        assert [m async for m in streamed] == [b"s", b"s"]
        assert await stubs.client_stream(iter([b"a", b"b"])) == b"ab"
        assert [m async for m in stubs.bidi(iter([b"x", b"y"]))] == [b"x", b"y"]


# -- bodies, trailers and flow control ---------------------------------------------------------


async def test_trailers_from_a_plain_h2_response(
    h2server: H2TestServer, pool: UpstreamPool
) -> None:
    _, owner = await _request(pool, _h2(h2server.port), "/trailers", b"")
    assert await owner.done() == "complete"
    assert bytes(owner.body) == b"hello"
    assert owner.trailers == [(b"x-t", b"1"), (b"x-checksum", b"abc")]
    assert owner.order == ["head", "body", "trailers", "complete"]


async def test_response_body_arrives_incrementally(
    h2server: H2TestServer, pool: UpstreamPool
) -> None:
    _, owner = await _request(pool, _h2(h2server.port), "/hold")
    served = await asyncio.wait_for(h2server.arrivals.get(), WAIT)
    served.respond(200)
    await owner.wait_for(lambda: owner.status == 200)
    for i in range(3):
        # Chunk i reaches the owner, and is flushed, before the server sends chunk i + 1.
        flushes = owner.flushes
        await served.send(b"chunk%d;" % i)
        await owner.wait_body(7 * (i + 1))
        await owner.wait_flushes(flushes + 1)
        assert owner.body.endswith(b"chunk%d;" % i) and owner.outcome is None
    await served.send(b"", end=True)
    assert await owner.done() == "complete"
    assert bytes(owner.body) == b"chunk0;chunk1;chunk2;"


async def test_informational_then_final_head(h2server: H2TestServer, pool: UpstreamPool) -> None:
    _, owner = await _request(pool, _h2(h2server.port), "/hold")
    served = await asyncio.wait_for(h2server.arrivals.get(), WAIT)
    served.respond(103, [(b"link", b"</a.css>; rel=preload")])
    served.respond(200, [(b"x-final", b"1")], end=True)
    assert await owner.done() == "complete"
    assert owner.informational == [103]
    assert (owner.status, owner.headers) == (200, [(b"x-final", b"1")])
    assert owner.order == ["informational", "head", "complete"]


async def test_response_ending_first_cancels_the_request_body(
    h2server: H2TestServer, pool: UpstreamPool
) -> None:
    endpoint = _h2(h2server.port)
    stream = await _stream(pool, endpoint)
    owner = Owner()
    stream.owner = owner
    stream.send_request(_get(endpoint.port, "/hold", b"POST"), end_stream=False)
    stream.send_data(b"first part")
    served = await asyncio.wait_for(h2server.arrivals.get(), WAIT)
    served.respond(413, end=True)
    assert await owner.done() == "complete"
    assert owner.status == 413
    await asyncio.wait_for(served.ended.wait(), WAIT)
    assert served.reset_code == 8  # CANCEL: the rest of the body is not coming
    stream.send_data(b"too late")  # ignored, not an error
    pool.release(stream, False)
    assert pool.stats()[str(endpoint)]["streams"] == 0


async def test_request_body_beyond_the_window_is_flow_controlled(
    h2server: H2TestServer, pool: UpstreamPool
) -> None:
    size = 2 * 1024 * 1024  # the server's windows are 64 KiB: ~32 rounds of WINDOW_UPDATE
    _, owner = await _request(pool, _h2(h2server.port), "/count", b"u" * size)
    assert await owner.done() == "complete"
    assert bytes(owner.body) == str(size).encode()
    assert owner.write_paused == [True, False]  # the owner was held back, then released


async def test_paused_stream_stalls_alone(h2server: H2TestServer, pool: UpstreamPool) -> None:
    endpoint = _h2(h2server.port)
    # Enough paused streams to fill the whole connection window with bytes nobody reads: the
    # connection window must re-open on receipt or the last stream starves.
    paused_count = CONNECTION_WINDOW // STREAM_WINDOW
    paused = []
    for _ in range(paused_count):
        stream, owner = await _request(pool, endpoint, "/hold", owner=Owner(pause_on_head=True))
        served = await asyncio.wait_for(h2server.arrivals.get(), WAIT)
        served.respond(200)
        sender = asyncio.create_task(served.send(b"p" * (2 * STREAM_WINDOW), end=True))
        await asyncio.wait_for(served.blocked.wait(), WAIT)  # the stream's window ran out
        paused.append((stream, owner, served, sender))
    for _, owner, _, _ in paused:
        await owner.wait_body(STREAM_WINDOW)
    flowing_size = 4 * STREAM_WINDOW
    _, flowing = await _request(pool, endpoint, f"/big/{flowing_size}")
    assert await flowing.done() == "complete"
    assert len(flowing.body) == flowing_size
    for _, owner, served, sender in paused:
        assert len(owner.body) == STREAM_WINDOW and owner.outcome is None
        assert served.window() == 0 and not sender.done()
    for stream, _, _, _ in paused:
        stream.resume_reading()
    for _, owner, _, sender in paused:
        assert await owner.done() == "complete"
        assert len(owner.body) == 2 * STREAM_WINDOW
        await sender
    assert len(h2server.connections) == 1


# -- resets, GOAWAY and connection failures ----------------------------------------------------


@pytest.mark.parametrize(("path", "outcome"), [("/rst", "lost:reset"), ("/refuse", "lost:refused")])
async def test_peer_reset_is_reported(
    h2server: H2TestServer, pool: UpstreamPool, path: str, outcome: str
) -> None:
    endpoint = _h2(h2server.port)
    _, owner = await _request(pool, endpoint, path)
    assert await owner.done() == outcome
    _, after = await _request(pool, endpoint, "/echo", b"still fine")
    assert await after.done() == "complete"
    assert len(h2server.connections) == 1  # a stream error leaves the connection up


async def test_abort_resets_only_that_stream(h2server: H2TestServer, pool: UpstreamPool) -> None:
    endpoint = _h2(h2server.port)
    stream, owner = await _request(pool, endpoint, "/hold")
    served = await asyncio.wait_for(h2server.arrivals.get(), WAIT)
    stream.abort()
    await asyncio.wait_for(served.ended.wait(), WAIT)
    assert served.reset_code == 8  # CANCEL
    assert owner.outcome is None  # an aborted stream's owner hears nothing more
    _, after = await _request(pool, endpoint, "/echo", b"ok")
    assert await after.done() == "complete"
    assert pool.stats()[str(endpoint)]["streams"] == 0


async def test_goaway_refuses_newer_streams_and_finishes_older(
    h2server: H2TestServer, pool: UpstreamPool
) -> None:
    endpoint = _h2(h2server.port)
    older_stream, older = await _request(pool, endpoint, "/hold")
    older_served = await asyncio.wait_for(h2server.arrivals.get(), WAIT)
    _, newer = await _request(pool, endpoint, "/hold")
    await asyncio.wait_for(h2server.arrivals.get(), WAIT)
    first = h2server.connections[0]
    first.goaway(last_stream_id=older_served.stream_id)
    assert await newer.done() == "lost:refused"
    # A new request goes to a new connection ...
    _, fresh = await _request(pool, endpoint, "/echo", b"new")
    assert await fresh.done() == "complete"
    assert len(h2server.connections) == 2
    # ... while the spared stream still completes on the old one, which then closes.
    older_served.respond(200)
    await older_served.send(b"finished", end=True)
    assert await older.done() == "complete"
    assert bytes(older.body) == b"finished"
    assert older_stream.connection.state is CLOSED  # closed by us once its last stream ended
    await asyncio.wait_for(first.lost, WAIT)
    assert pool.stats()[str(endpoint)] | {"open": 0} == {"open": 0, "idle": 1, "streams": 0}


async def test_idle_connection_expires(h2server: H2TestServer) -> None:
    pool = UpstreamPool(PoolLimits(idle_expiry=0.2), 5.0)
    endpoint = _h2(h2server.port)
    _, owner = await _request(pool, endpoint, "/echo", b"x")
    assert await owner.done() == "complete"
    await asyncio.wait_for(h2server.connections[0].lost, WAIT)
    assert pool.stats()[str(endpoint)]["idle"] == 0
    assert pool.acquire(endpoint) is None
    pool.close()


async def test_connection_refused_fails_every_waiter(free_port: int, pool: UpstreamPool) -> None:
    endpoint = _h2(free_port)
    results: list[tuple[object, BaseException | None]] = []
    done = asyncio.Event()

    def connected(conn: object, error: BaseException | None) -> None:
        results.append((conn, error))
        if len(results) == 3:
            done.set()

    for _ in range(3):
        pool.connect(endpoint, connected)
    await asyncio.wait_for(done.wait(), WAIT)
    assert all(conn is None and isinstance(error, OSError) for conn, error in results)
    assert pool.stats()[str(endpoint)]["open"] == 0


async def test_peer_that_is_not_h2_fails_the_dial(pool: UpstreamPool) -> None:
    async def http1(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(100)
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(http1, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(ConnectionError):
            await _stream(pool, _h2(port))
    finally:
        server.close()


async def test_http1_endpoints_keep_the_http1_pool(pool: UpstreamPool) -> None:
    endpoint = Endpoint("127.0.0.1", 1)
    assert pool.acquire(endpoint) is None
    assert pool._h2 == {}  # an HTTP/1.1 miss never touches the h2c side
