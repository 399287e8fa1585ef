"""Load balancing, passive health, session persistence and mirrors through the data path."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import httpx

from gateway.lb.policy import LbPolicy
from gateway.snapshot import Mirror, SessionAffinity
from tests.fixtures.gateway_process import free_port as another_port
from tests.fixtures.proxy import StaticBackend, choice, holder, rule, start_fixed_server, wait_for


async def _gateway(gateway_factory, port: int, rules: dict) -> httpx.AsyncClient:
    await gateway_factory(holder(port, rules))
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10)


async def test_round_robin_spreads_evenly(echo_factory, gateway_factory, free_port: int) -> None:
    echoes = [await echo_factory(f"e{i}") for i in range(3)]
    backend = StaticBackend("rr", [e.port for e in echoes], LbPolicy("RoundRobin"))
    async with await _gateway(gateway_factory, free_port, {"/": rule(choice(backend))}) as c:
        seen = Counter([(await c.get("/rr")).json()["backend"] for _ in range(90)])
    assert seen == {"e0": 30, "e1": 30, "e2": 30}


async def test_least_request_avoids_busy_endpoint(
    echo_factory, gateway_factory, free_port: int
) -> None:
    a, b = await echo_factory("a"), await echo_factory("b")
    balanced = StaticBackend("lr", [a.port, b.port], LbPolicy("LeastRequest"))
    pinned = StaticBackend("pin", [a.port])  # shares endpoint a, so its requests load a
    rules = {"/lr": rule(choice(balanced)), "/pin": rule(choice(pinned))}
    async with await _gateway(gateway_factory, free_port, rules) as c:
        slow = [asyncio.create_task(c.get("/pin?delay_ms=500")) for _ in range(3)]
        await wait_for(lambda: a.stats.requests == 3)
        seen = Counter([(await c.get("/lr")).json()["backend"] for _ in range(10)])
        assert seen == {"b": 10}
        await asyncio.gather(*slow)
        seen = Counter([(await c.get("/lr")).json()["backend"] for _ in range(10)])
    assert set(seen) == {"a", "b"}


async def test_consistent_hash_on_header_is_sticky(
    echo_factory, gateway_factory, free_port: int
) -> None:
    echoes = [await echo_factory(f"e{i}") for i in range(4)]
    backend = StaticBackend(
        "ch", [e.port for e in echoes], LbPolicy("ConsistentHash", "header:x-user")
    )
    async with await _gateway(gateway_factory, free_port, {"/": rule(choice(backend))}) as c:
        owners: dict[str, set[str]] = {}
        for user in range(30):
            for _ in range(4):
                response = await c.get("/ch", headers={"x-user": f"user-{user}"})
                owners.setdefault(f"user-{user}", set()).add(response.json()["backend"])
    assert all(len(backends) == 1 for backends in owners.values())
    assert len(set().union(*owners.values())) >= 3


async def test_consistent_hash_on_source_ip(echo_factory, gateway_factory, free_port: int) -> None:
    echoes = [await echo_factory(f"e{i}") for i in range(3)]
    backend = StaticBackend("ip", [e.port for e in echoes], LbPolicy("ConsistentHash", "source-ip"))
    async with await _gateway(gateway_factory, free_port, {"/": rule(choice(backend))}) as c:
        seen = {(await c.get("/ip")).json()["backend"] for _ in range(20)}
    assert len(seen) == 1


async def test_passive_health_ejects_failing_endpoint(
    echo_factory, gateway_factory, free_port: int
) -> None:
    good = await echo_factory("good")
    backend = StaticBackend("mixed", [another_port(), good.port], LbPolicy("RoundRobin"))
    async with await _gateway(gateway_factory, free_port, {"/": rule(choice(backend))}) as c:
        first = Counter([(await c.get("/h")).status_code for _ in range(10)])
        assert first == {503: 5, 200: 5}  # the fifth connect failure ejects the dead endpoint
        after = Counter([(await c.get("/h")).status_code for _ in range(20)])
    assert after == {200: 20}


async def test_passive_health_counts_5xx(echo_factory, gateway_factory, free_port: int) -> None:
    bad = await start_fixed_server(
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n"
    )
    good = await echo_factory("good")
    bad_port = bad.sockets[0].getsockname()[1]
    backend = StaticBackend("mixed", [bad_port, good.port], LbPolicy("RoundRobin"))
    async with bad, await _gateway(gateway_factory, free_port, {"/": rule(choice(backend))}) as c:
        first = Counter([(await c.get("/h")).status_code for _ in range(10)])
        assert first == {500: 5, 200: 5}
        after = Counter([(await c.get("/h")).status_code for _ in range(20)])
    assert after == {200: 20}


async def test_panic_mode_when_every_endpoint_is_ejected(gateway_factory, free_port: int) -> None:
    bad = await start_fixed_server(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
    backend = StaticBackend("bad", [bad.sockets[0].getsockname()[1]])
    async with bad, await _gateway(gateway_factory, free_port, {"/": rule(choice(backend))}) as c:
        statuses = Counter([(await c.get("/p")).status_code for _ in range(12)])
    assert statuses == {502: 12}  # still proxied after ejection, never "no healthy upstream"


async def test_session_cookie_is_set_and_sticky(
    echo_factory, gateway_factory, free_port: int
) -> None:
    echoes = [await echo_factory(f"e{i}") for i in range(3)]
    backend = StaticBackend(
        "s", [e.port for e in echoes], LbPolicy("ConsistentHash", "cookie:session")
    )
    sticky = rule(choice(backend), affinity=SessionAffinity("Cookie", "session", "/", 3600))
    await gateway_factory(holder(free_port, {"/": sticky}))
    chosen = set()
    for _ in range(8):
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}", timeout=5) as c:
            first = await c.get("/s")
            cookie = first.headers["set-cookie"]
            assert cookie.startswith("session=") and "Path=/" in cookie and "Max-Age=3600" in cookie
            value = c.cookies["session"]
            assert f"session={value}" in first.json()["headers"]["cookie"]
            backends = {first.json()["backend"]}
            for _ in range(5):
                again = await c.get("/s")
                assert "set-cookie" not in again.headers
                backends.add(again.json()["backend"])
            assert len(backends) == 1
            chosen |= backends
    assert len(chosen) >= 2


async def test_mirror_receives_a_copy(echo_factory, gateway_factory, free_port: int) -> None:
    main, shadow = await echo_factory("main"), await echo_factory("shadow")
    mirrors = (
        Mirror(StaticBackend("shadow", [shadow.port])),
        Mirror(StaticBackend("dead", [another_port()])),
    )
    rules = {
        "/m": rule(choice(StaticBackend("main", [main.port])), mirrors=mirrors),
        "/never": rule(
            choice(StaticBackend("main", [main.port])),
            mirrors=(Mirror(StaticBackend("s", [shadow.port]), 0.0),),
        ),
    }
    async with await _gateway(gateway_factory, free_port, rules) as c:
        response = await c.post("/m/copy?x=1", content=b"z" * 3000)
        assert response.json()["backend"] == "main"
        await wait_for(lambda: any(r["path"] == "/m/copy?x=1" for r in shadow.stats.recent))
        (copy,) = [r for r in shadow.stats.recent if r["path"] == "/m/copy?x=1"]
        assert copy["body_length"] == 3000 and copy["method"] == "POST"
        assert (await c.get("/never")).status_code == 200
    assert all(r["path"] != "/never" for r in shadow.stats.recent)


async def test_slow_mirror_does_not_delay_main(
    echo_factory, gateway_factory, free_port: int
) -> None:
    main = await echo_factory("main")
    blackhole = await start_fixed_server(None)
    mirror = Mirror(StaticBackend("hole", [blackhole.sockets[0].getsockname()[1]]))
    rules = {"/": rule(choice(StaticBackend("main", [main.port])), mirrors=(mirror,))}
    async with blackhole, await _gateway(gateway_factory, free_port, rules) as c:
        started = time.monotonic()
        for i in range(5):
            assert (await c.post(f"/x/{i}", content=b"q" * 1000)).status_code == 200
        assert (
            time.monotonic() - started < 1.0
        )  # a mirror that never answers costs the client nothing
