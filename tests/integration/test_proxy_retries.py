"""HTTPRoute retries and timeouts, and the idle timeout that replaces a total timeout."""

from __future__ import annotations

import time

import httpx
import pytest

from gateway.demo.echo import EchoServer
from gateway.proxy.options import ProxyOptions
from gateway.snapshot import RetryPolicy, Timeouts
from tests.fixtures.gateway_process import free_port as another_port
from tests.fixtures.proxy import StaticBackend, choice, holder, rule, wait_for


async def _client_for(
    gateway_factory, port: int, rules: dict, options: ProxyOptions | None = None
) -> httpx.AsyncClient:
    await gateway_factory(holder(port, rules), options)
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)


@pytest.mark.parametrize(
    ("failures", "code", "status", "tries"),
    [(2, 500, 200, 3), (4, 500, 500, 4), (2, 503, 503, 1)],
)
async def test_retry_on_listed_codes(
    echo: EchoServer,
    gateway_factory,
    free_port: int,
    failures: int,
    code: int,
    status: int,
    tries: int,
) -> None:
    retry = RetryPolicy(attempts=3, codes=frozenset({500}))
    backend = StaticBackend("echo", [echo.port])
    async with await _client_for(
        gateway_factory, free_port, {"/": rule(choice(backend), retry=retry)}
    ) as c:
        response = await c.get(f"/r?fail={failures}&fail_code={code}")
    assert response.status_code == status
    assert echo.stats.requests == tries


async def test_retry_on_connect_error_uses_another_endpoint(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    backend = StaticBackend("mixed", [another_port(), echo.port])
    rules = {"/": rule(choice(backend), retry=RetryPolicy(attempts=1))}
    async with await _client_for(gateway_factory, free_port, rules) as c:
        statuses = [(await c.get(f"/c/{i}")).status_code for i in range(6)]
    assert statuses == [200] * 6
    assert echo.stats.requests == 6


async def test_retry_on_reset_without_codes(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    rules = {"/": rule(choice(StaticBackend("echo", [echo.port])), retry=RetryPolicy(attempts=3))}
    async with await _client_for(gateway_factory, free_port, rules) as c:
        assert (await c.get("/r?fail=2&fail_mode=reset")).status_code == 200
        assert (await c.get("/r?fail=4&fail_mode=reset")).status_code == 502


async def test_no_retry_without_policy(echo: EchoServer, gateway_factory, free_port: int) -> None:
    rules = {"/": rule(choice(StaticBackend("echo", [echo.port])))}
    async with await _client_for(gateway_factory, free_port, rules) as c:
        assert (await c.get("/r?fail=1&fail_code=500")).status_code == 500
        assert (await c.get("/r?fail=1&fail_mode=reset")).status_code == 502
    assert echo.stats.requests == 2


async def test_no_retry_after_first_byte(echo: EchoServer, gateway_factory, free_port: int) -> None:
    retry = RetryPolicy(attempts=3, codes=frozenset({500, 502}))
    rules = {"/": rule(choice(StaticBackend("echo", [echo.port])), retry=retry)}
    async with await _client_for(gateway_factory, free_port, rules) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get("/sse?events=0&interval_ms=5&die_after=2")
    assert echo.stats.requests == 1


async def test_retry_replays_buffered_body_only_when_small(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    retry = RetryPolicy(attempts=2, codes=frozenset({500}))
    rules = {"/": rule(choice(StaticBackend("echo", [echo.port])), retry=retry)}
    options = ProxyOptions(max_retry_body=64 * 1024)
    async with await _client_for(gateway_factory, free_port, rules, options) as c:
        small = await c.post("/body-small?fail=1", content=b"s" * 10_000)
        assert small.status_code == 200 and small.json()["body_length"] == 10_000

        async def chunks():
            for _ in range(5):
                yield b"b" * 10_000

        assert (await c.post("/body-chunked?fail=1", content=chunks())).json()[
            "body_length"
        ] == 50_000
        big = await c.post("/body-big?fail=1", content=b"b" * 100_000)
        assert big.status_code == 500  # too big to replay: streamed once, not retried


async def test_backoff_between_tries(echo: EchoServer, gateway_factory, free_port: int) -> None:
    retry = RetryPolicy(attempts=2, codes=frozenset({503}), backoff=0.1)
    rules = {"/": rule(choice(StaticBackend("echo", [echo.port])), retry=retry)}
    async with await _client_for(gateway_factory, free_port, rules) as c:
        started = time.monotonic()
        assert (await c.get("/b?fail=2&fail_code=503")).status_code == 200
        assert time.monotonic() - started >= 0.3  # 0.1 then 0.2


async def test_backend_request_timeout_per_try(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    timeouts = Timeouts(backend_request=0.2)
    backend = StaticBackend("echo", [echo.port])
    rules = {
        "/retry": rule(choice(backend), timeouts=timeouts, retry=RetryPolicy(attempts=2)),
        "/once": rule(choice(backend), timeouts=timeouts),
    }
    async with await _client_for(gateway_factory, free_port, rules) as c:
        assert (await c.get("/retry?fail=2&fail_mode=slow&slow_ms=300")).status_code == 200
        response = await c.get("/retry?fail=3&fail_mode=slow&slow_ms=300")
        assert response.status_code == 504 and "timeout" in response.text
        started = time.monotonic()
        assert (await c.get("/once?delay_ms=1000")).status_code == 504
        assert time.monotonic() - started < 0.9  # 0.2 s timeout, not the 1 s answer


async def test_request_timeout_bounds_all_tries(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    timeouts = Timeouts(request=0.4, backend_request=0.2)
    rules = {
        "/": rule(
            choice(StaticBackend("echo", [echo.port])),
            timeouts=timeouts,
            retry=RetryPolicy(attempts=5),
        )
    }
    async with await _client_for(gateway_factory, free_port, rules) as c:
        assert (await c.get("/t?fail=1&fail_mode=slow&slow_ms=100")).status_code == 200
        started = time.monotonic()
        response = await c.get("/t?fail=4&fail_mode=slow&slow_ms=300")
        assert response.status_code == 504
        assert 0.35 < time.monotonic() - started < 1.0


async def test_request_timeout_after_headers_closes_connection(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    rules = {"/": rule(choice(StaticBackend("echo", [echo.port])), timeouts=Timeouts(request=0.3))}
    async with await _client_for(gateway_factory, free_port, rules) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get("/sse?events=20&interval_ms=50")
    await wait_for(lambda: echo.stats.sse_open == 0)


async def test_no_total_timeout_by_default_but_idle_timeout(
    echo: EchoServer, gateway_factory, free_port: int
) -> None:
    rules = {"/": rule(choice(StaticBackend("echo", [echo.port])))}
    async with await _client_for(
        gateway_factory, free_port, rules, ProxyOptions(idle_timeout=0.4)
    ) as c:
        # 1.5 s of SSE with an event every 100 ms: never idle, never cut.
        response = await c.get("/sse?events=15&interval_ms=100")
        assert response.status_code == 200 and response.text.count("data: ") == 15
        started = time.monotonic()
        response = await c.get("/silent?delay_ms=5000")
        assert response.status_code == 504 and "idle" in response.text
        assert time.monotonic() - started < 1.5
