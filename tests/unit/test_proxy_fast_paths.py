"""The data path's shortcuts give the same results as the general code they bypass."""

from __future__ import annotations

import os
import re

import pytest

from gateway.backends.base import Endpoint
from gateway.observability.metrics import IstioMetrics
from gateway.proxy import exchange as exchange_module
from gateway.proxy.exchange import Exchange, new_request_id
from gateway.proxy.headers import upstream_request_head
from gateway.proxy.options import ProxyOptions
from gateway.proxy.pool import UpstreamPool
from gateway.proxy.upstream import IDLE, Http1Connection
from tests.fixtures.proxy import parsing_connection
from tests.fixtures.records import make_record

REQUESTS = [
    b"GET /a?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\nAccept: */*\r\n\r\n",
    b"GET /b HTTP/1.1\r\nHOST: example.com:8080\r\nX-Request-Id: given\r\nTE: trailers\r\n"
    b"Keep-Alive: 5\r\nX-Forwarded-For: 1.2.3.4\r\nX-Forwarded-Proto: https\r\n"
    b"traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\r\n",
    b"POST /c HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\nabc",
    b"POST /d HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n",
    b"GET /e HTTP/1.0\r\n\r\n",
    b"GET http://absolute.example/f?q HTTP/1.0\r\n\r\n",
    b"GET /g HTTP/1.0\r\nProxy-Connection: keep-alive\r\nHost: h\r\n\r\n",
    b"GET /h HTTP/1.1\r\nHost: h\r\nA: 1\r\na: 2\r\nConnection: keep-alive\r\n\r\n",
]


async def _parsed(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> Exchange:
    conn, started, _ = parsing_connection(monkeypatch)
    conn.data_received(raw)
    assert len(started) == 1, raw
    return started[0]


def _head_bytes(exchange: Exchange, forward: list[str] | None) -> bytes:
    exchange.forward = forward
    return upstream_request_head(exchange)


@pytest.mark.parametrize("raw", REQUESTS)
async def test_forwarded_lines_built_while_parsing_equal_the_general_path(
    raw: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange = await _parsed(raw, monkeypatch)
    assert exchange.forward is not None
    assert _head_bytes(exchange, exchange.forward) == _head_bytes(exchange, None)
    # The index the parser seeds is the one RequestHead.get would build.
    head = exchange.head
    for name, _ in head.headers:
        expected = next(v for n, v in head.headers if n.lower() == name.lower())
        assert head.get(name.lower()) == expected


async def test_connection_listed_fields_take_the_general_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = b"GET / HTTP/1.1\r\nHost: h\r\nConnection: x-secret\r\nX-Secret: s\r\n\r\n"
    exchange = await _parsed(raw, monkeypatch)
    assert exchange.forward is None
    assert b"x-secret" not in _head_bytes(exchange, None).lower()


@pytest.mark.parametrize(
    ("raw", "http10", "keep_alive"),
    [
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", False, True),
        (b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", False, False),
        (b"GET / HTTP/1.0\r\n\r\n", True, False),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True, True),
        (b"GET / HTTP/1.0\r\nProxy-Connection: keep-alive\r\n\r\n", True, None),
    ],
)
async def test_http_version_shortcut(
    raw: bytes, http10: bool, keep_alive: bool | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange = await _parsed(raw, monkeypatch)
    assert exchange.http10 is http10
    if keep_alive is not None:
        assert exchange.keep_alive is keep_alive


def test_request_ids_are_32_hex_digits_and_unique() -> None:
    ids = [new_request_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_forked_workers_draw_their_own_request_id_prefix() -> None:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once
        try:
            os.write(write_end, new_request_id().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child = os.read(read_end, 64).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    assert len(child) == 32
    assert child[:16] != new_request_id()[:16]


def test_request_id_reseed_changes_the_prefix() -> None:
    before = new_request_id()
    exchange_module._reseed_request_ids()
    assert new_request_id()[:16] != before[:16]


def test_metrics_memo_follows_changing_outcomes() -> None:
    metrics = IstioMetrics()
    outcomes = [(200, "-"), (200, "-"), (503, "UH"), (200, "-"), (503, "UH"), (200, "UC")]
    for status, flags in outcomes:
        metrics.observe(make_record(status=status, flags=flags))
    counts = {(s[0][21], s[0][23]): s[1] for s in metrics.export_state()["series"]}
    assert counts == {("200", "-"): 3, ("503", "UH"): 2, ("200", "UC"): 1}


async def test_pool_finds_idle_connections_for_equal_endpoint_objects() -> None:
    pool = UpstreamPool(ProxyOptions().pool, 1.0)
    first = Endpoint("127.0.0.1", 9000)
    conn = Http1Connection(pool, first)
    conn.state = IDLE
    conn.idle_list = pool._idle.setdefault(first, [])
    conn.idle_list.append(conn)
    assert pool.acquire(Endpoint("127.0.0.1", 9000)) is conn  # equal, not the same object
    conn.state = IDLE
    conn.idle_list.append(conn)
    assert pool.acquire(first) is conn
    assert pool.acquire(first) is None
