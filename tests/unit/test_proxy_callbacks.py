"""HTTP/1.1 parsing on both sides: pipelined heads, oversized heads, trailers, reused upstreams."""

from __future__ import annotations

import pytest

from gateway.backends.base import Endpoint
from gateway.proxy.downstream import DownstreamConnection
from gateway.proxy.exchange import Exchange
from gateway.proxy.options import ProxyOptions
from gateway.proxy.pool import UpstreamPool
from gateway.proxy.upstream import Http1Connection, split_head
from tests.fixtures.proxy import RecordingTransport, parsing_connection


def _request(i: int) -> bytes:
    return f"GET /r{i}?q={i} HTTP/1.1\r\nHost: h{i}\r\nX-N: {i}\r\n\r\n".encode()


def _all(conn: DownstreamConnection, started: list[Exchange]) -> list[Exchange]:
    """The first request started; the others wait their turn in the queue."""
    return started + conn.queue


def _check(parsed: list[Exchange], count: int) -> None:
    assert len(parsed) == count
    for i, exchange in enumerate(parsed):
        head = exchange.head
        assert (head.path, head.query, head.authority) == (f"/r{i}", f"q={i}", f"h{i}")
        assert head.headers == [("Host", f"h{i}"), ("X-N", str(i))]


@pytest.mark.parametrize("step", [1, 2, 7, 40, 1000])
async def test_each_pipelined_request_gets_its_own_head(
    step: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn, parsed, transport = parsing_connection(monkeypatch)
    data = b"".join(_request(i) for i in range(5))
    for at in range(0, len(data), step):
        conn.data_received(data[at : at + step])
    _check(_all(conn, parsed), 5)
    assert transport.written == []


async def test_many_complete_requests_in_one_read_are_not_an_oversized_head(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = ProxyOptions(max_header_bytes=200, max_pipelined=1000)
    conn, parsed, transport = parsing_connection(monkeypatch, options)
    data = b"".join(_request(i) for i in range(100))
    assert len(data) > 4 * options.max_header_bytes
    conn.data_received(data)
    _check(_all(conn, parsed), 100)
    assert transport.written == []


async def test_an_unfinished_oversized_head_still_answers_431(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = ProxyOptions(max_header_bytes=200)
    conn, parsed, transport = parsing_connection(monkeypatch, options)
    conn.data_received(_request(0))
    conn.data_received(b"GET /next HTTP/1.1\r\nX-Long: " + b"a" * 500)
    assert len(_all(conn, parsed)) == 1
    # The answer waits for the request in flight; the connection stopped parsing with a 431.
    assert conn._error is not None and conn._error.status == 431
    assert transport.written == []


async def test_trailers_are_not_request_headers(monkeypatch: pytest.MonkeyPatch) -> None:
    conn, started, _ = parsing_connection(monkeypatch)
    conn.data_received(
        b"POST /r0?q=0 HTTP/1.1\r\nHost: h0\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"1\r\na\r\n0\r\nX-Trailer: t\r\n\r\n" + _request(1)
    )
    parsed = _all(conn, started)
    assert len(parsed) == 2
    assert [n for n, _ in parsed[0].head.headers] == ["Host", "Transfer-Encoding"]
    assert parsed[1].head.headers == [("Host", "h1"), ("X-N", "1")]


class _Owner:
    def __init__(self) -> None:
        self.heads: list[tuple[int, bytes, list[tuple[bytes, bytes]]]] = []
        self.informational: list[int] = []
        self.completed = 0

    def upstream_informational(self, status: int) -> None:
        self.informational.append(status)

    def upstream_head_raw(self, conn: Http1Connection, status: int, raw: bytes) -> None:
        reason, headers = split_head(raw)
        self.heads.append((status, reason, headers))

    def upstream_body(self, data: bytes) -> None: ...

    def upstream_flush(self) -> None: ...

    def upstream_complete(self, conn: Http1Connection) -> None:
        self.completed += 1


async def test_upstream_responses_on_one_connection_keep_their_own_heads() -> None:
    conn = Http1Connection(UpstreamPool(ProxyOptions().pool, 1.0), Endpoint("127.0.0.1", 1))
    conn.connection_made(RecordingTransport())  # type: ignore[arg-type]
    owner = _Owner()
    conn.owner = owner  # type: ignore[assignment]
    conn.data_received(
        b"HTTP/1.1 100 Continue\r\nX-Interim: 1\r\n\r\n"
        b"HTTP/1.1 200 Fine\r\nA: 1\r\nContent-Length: 2\r\n\r\nok"
    )
    conn.owner = owner  # type: ignore[assignment]  # reused by the next request
    conn.data_received(b"HTTP/1.1 404\r\nB: 2\r\nContent-Length: 0\r\n\r\n")
    conn.owner = owner  # type: ignore[assignment]
    for part in (b"HTTP/1.1 503 Busy", b" Now\r\nC: 3\r\n", b"Content-Length: 0\r\n\r\n"):
        conn.data_received(part)
    assert owner.informational == [100]
    assert owner.completed == 3
    assert owner.heads == [
        (200, b"Fine", [(b"A", b"1"), (b"Content-Length", b"2")]),
        (404, b"", [(b"B", b"2"), (b"Content-Length", b"0")]),
        (503, b"Busy Now", [(b"C", b"3"), (b"Content-Length", b"0")]),
    ]
