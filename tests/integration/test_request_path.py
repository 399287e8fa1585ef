"""The request path's seams under real traffic, through a plugin as a real one would use them.

A backend that reads the JSON body and picks asynchronously (``ModelPicker``), a body filter that
rewrites the body, a pre-route stage whose header selects the route, a tap that counts SSE events:
each with HTTP/1.1 and HTTP/2 clients (httpx), and a raw client where the test needs to leave at a
precise moment. See ``tests/fixtures/request_path_plugin.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from h2.events import DataReceived, ResponseReceived, StreamEnded, StreamReset
from h2.exceptions import StreamClosedError

import gateway.plugins
from gateway.demo.echo import EchoServer
from gateway.plugins import PluginSpec, load_plugins
from gateway.proxy.listeners import ListenerManager
from gateway.proxy.options import ProxyOptions
from tests.fixtures.echo_process import gateway_yaml, service_yaml
from tests.fixtures.gateway_process import free_port as another_free_port
from tests.fixtures.plugins import TEST_PLUGIN, plugin_sandbox  # noqa: F401  (fixture)
from tests.fixtures.proxy import holder_from_yaml
from tests.fixtures.raw_h2 import RawH2
from tests.fixtures.request_path_plugin import GROUP, PathLog

PATH_PLUGIN = PluginSpec("request-path", "tests.fixtures.request_path_plugin:register", "tests")
CLIENTS = ["http/1.1", "h2"]


@pytest.fixture
def log(plugin_sandbox: None) -> Iterator[PathLog]:  # noqa: F811
    """Both test plugins loaded; the request-path plugin's log."""
    load_plugins([TEST_PLUGIN, PATH_PLUGIN])
    state = gateway.plugins._REGISTRY.states["test.request_path"]
    assert isinstance(state, PathLog)
    yield state
    state.release()  # no slow pick outlives its test


def client(port: int, protocol: str, timeout: float = 5.0) -> httpx.AsyncClient:
    """An httpx client speaking HTTP/1.1, or HTTP/2 with prior knowledge."""
    h2 = protocol == "h2"
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", http1=not h2, http2=h2, timeout=timeout
    )


def picker_yaml(name: str, endpoints: list[tuple[str, int, bool]]) -> str:
    """A ModelPicker: (model, port, slow) on 127.0.0.1."""
    listed = ", ".join(
        f"{{model: {m}, address: 127.0.0.1, port: {p}, slow: {str(slow).lower()}}}"
        for m, p, slow in endpoints
    )
    return f"""
---
apiVersion: {GROUP}/v1alpha1
kind: ModelPicker
metadata: {{name: {name}, namespace: default}}
spec: {{endpoints: [{listed}]}}
"""


def route_yaml(rules: str) -> str:
    """An HTTPRoute on Gateway ``gw`` with the given rules (YAML list items, 4-space indent)."""
    return f"""
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: r, namespace: default}}
spec:
  parentRefs: [{{name: gw}}]
  rules:
{rules}"""


PICK_RULE = f"""    - matches: [{{path: {{type: PathPrefix, value: /}}}}]
      backendRefs: [{{group: {GROUP}, kind: ModelPicker, name: models}}]
"""


@pytest.fixture
async def two_echoes(echo_factory) -> tuple[EchoServer, EchoServer]:  # type: ignore[no-untyped-def]
    return await echo_factory("a"), await echo_factory("b")


async def start(gateway_factory, port: int, yaml: str, options: ProxyOptions | None = None):  # type: ignore[no-untyped-def]
    return await gateway_factory(holder_from_yaml(gateway_yaml(port) + yaml), options)


async def picker_gateway(
    gateway_factory: Any,
    port: int,
    a: EchoServer,
    b: EchoServer,
    rules: str = PICK_RULE,
    extra: str = "",
) -> ListenerManager:
    models = [("a", a.port, False), ("b", b.port, False), ("slow", a.port, True)]
    yaml = picker_yaml("models", models) + extra + route_yaml(rules)
    return await start(gateway_factory, port, yaml)


# -- a backend that reads the body and picks asynchronously ----------------------------------------


@pytest.mark.parametrize("protocol", CLIENTS)
async def test_async_pick_chooses_by_the_body_and_learns_the_outcome(
    protocol: str, log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    await picker_gateway(gateway_factory, free_port, a, b)
    body = json.dumps({"model": "b", "messages": [{"role": "user", "content": "hi"}]}).encode()
    async with client(free_port, protocol) as c:
        response = await c.post("/v1/chat/completions", content=body)
        unknown = await c.post("/v1/chat/completions", json={"model": "zzz"})
    assert response.status_code == 200
    assert response.headers["x-echo-backend"] == "b"
    assert json.loads(response.content)["body_length"] == len(body)  # the same bytes, forwarded
    assert unknown.status_code == 503 and "default/models" in unknown.text
    async with client(free_port, protocol) as c:
        shed = await c.post("/v1/chat/completions", json={"model": "shed"})
    assert shed.status_code == 429 and "saturated" in shed.text  # the pick answered itself
    assert [p["model"] for p in log.picks] == ["b", "zzz", "shed"]
    (outcome,) = log.outcomes
    assert outcome["endpoint"] == f"127.0.0.1:{b.port}"
    assert (outcome["status"], outcome["ok"], outcome["aborted"]) == (200, True, False)
    assert outcome["state"] == {"model": "b"}
    assert outcome["request_bytes"] == len(body)
    assert outcome["response_bytes"] == len(response.content)
    assert 0 <= outcome["first_byte"] <= outcome["duration"]


async def test_slow_pick_is_cancelled_when_the_http1_client_leaves(
    log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    await picker_gateway(gateway_factory, free_port, a, b)
    body = b'{"model": "slow"}'
    _, writer = await asyncio.open_connection("127.0.0.1", free_port)
    writer.write(
        b"POST /v1 HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    await asyncio.wait_for(log.event("waiting").wait(), 5)
    writer.close()
    await asyncio.wait_for(log.event("cancelled").wait(), 5)
    assert len(log.cancelled) == 1
    assert a.stats.requests == 0  # the request never left the gateway
    async with client(free_port, "http/1.1") as c:  # the gateway serves on
        assert (await c.post("/v1", json={"model": "a"})).status_code == 200


async def test_slow_pick_is_cancelled_by_an_http2_stream_reset(
    log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    await picker_gateway(gateway_factory, free_port, a, b)
    h2 = await RawH2.open(free_port)
    try:
        sid = h2.conn.get_next_available_stream_id()
        h2.conn.send_headers(
            sid,
            [(":method", "POST"), (":scheme", "http"), (":authority", "h"), (":path", "/v1")],
        )
        h2.conn.send_data(sid, b'{"model": "slow"}', end_stream=True)
        await h2.flush()
        await asyncio.wait_for(log.event("waiting").wait(), 5)
        h2.conn.reset_stream(sid)
        await h2.flush()
        await asyncio.wait_for(log.event("cancelled").wait(), 5)
        # The connection carries on: another stream on it is answered.
        other = h2.request("/v1", end_stream=False)
        h2.conn.send_data(other, b'{"model": "a"}', end_stream=True)
        await h2.flush()
        event = await h2.until(
            lambda e: getattr(e, "stream_id", None) == other and hasattr(e, "headers")
        )
        assert dict(event.headers)[b":status"] == b"200"
    finally:
        h2.close()
    assert len(log.cancelled) == 1 and a.stats.requests == 1


async def test_request_timeout_cancels_a_slow_pick(
    log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    rules = PICK_RULE + "      timeouts: {request: 200ms}\n"
    await picker_gateway(gateway_factory, free_port, a, b, rules)
    async with client(free_port, "http/1.1") as c:
        response = await c.post("/v1", json={"model": "slow"})
    assert response.status_code == 504 and "timeout" in response.text
    await asyncio.wait_for(log.event("cancelled").wait(), 5)


async def test_the_idle_timeout_cancels_a_slow_pick(
    log: PathLog, echo: EchoServer, gateway_factory, free_port: int
) -> None:
    models = [("slow", echo.port, True)]
    yaml = picker_yaml("models", models) + route_yaml(PICK_RULE)
    await start(gateway_factory, free_port, yaml, ProxyOptions(idle_timeout=0.4))
    async with client(free_port, "http/1.1") as c:
        response = await c.post("/v1", json={"model": "slow"})
    assert response.status_code == 504 and "idle timeout" in response.text
    await asyncio.wait_for(log.event("cancelled").wait(), 5)


async def test_draining_answers_a_waiting_pick_at_once(
    log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    manager = await picker_gateway(gateway_factory, free_port, a, b)
    async with client(free_port, "http/1.1") as c:
        pending = asyncio.ensure_future(c.post("/v1", json={"model": "slow"}))
        await asyncio.wait_for(log.event("waiting").wait(), 5)
        closing = asyncio.ensure_future(manager.close(grace=5.0))
        response = await asyncio.wait_for(pending, 5)
        await closing
    assert response.status_code == 503 and "shutting down" in response.text
    assert len(log.cancelled) == 1


async def test_a_retry_asks_the_pick_again_with_the_endpoints_tried(
    log: PathLog, echo: EchoServer, gateway_factory, free_port: int
) -> None:
    dead = another_free_port()  # nothing listens there: the first try is refused
    rules = PICK_RULE + "      retry: {attempts: 1}\n"
    models = [("dead", dead, False), ("live", echo.port, False)]
    await start(gateway_factory, free_port, picker_yaml("models", models) + route_yaml(rules))
    async with client(free_port, "http/1.1") as c:
        response = await c.post("/v1", json={"model": "dead"})
    assert response.status_code == 200 and response.headers["x-echo-backend"] == "echo"
    assert [p["tried"] for p in log.picks] == [[], [f"127.0.0.1:{dead}"]]
    refused, served = log.outcomes
    assert (refused["status"], refused["ok"], refused["failure"]) == (0, False, "connect_refused")
    assert (served["status"], served["ok"], served["failure"]) == (200, True, "")


# -- the body stage: the cap and a rewrite ---------------------------------------------------------


OVERSIZED = b'{"model": "a", "pad": "' + b"x" * (5 * 1024 * 1024) + b'"}'


async def _parts() -> AsyncIterator[bytes]:
    for at in range(0, len(OVERSIZED), 256 * 1024):
        yield OVERSIZED[at : at + 256 * 1024]


async def _h2_upload(port: int, declared: bool) -> tuple[int, bytes]:
    """POST the oversized body over HTTP/2 as RFC 9113 8.1 lets a client: reading the answer that
    may come before the body ends (httpx cannot: it fails once the server resets the stream)."""
    h2 = await RawH2.open(port)
    try:
        sid = h2.conn.get_next_available_stream_id()
        fields = [(":method", "POST"), (":scheme", "http"), (":authority", "h"), (":path", "/v1")]
        if declared:
            fields.append(("content-length", str(len(OVERSIZED))))
        h2.conn.send_headers(sid, fields)
        await h2.flush()
        sent, status, body, closed = 0, 0, b"", False
        while True:
            if not closed and not status and sent < len(OVERSIZED):
                size = min(h2.conn.local_flow_control_window(sid), h2.conn.max_outbound_frame_size)
                if size:
                    chunk = OVERSIZED[sent : sent + size]
                    try:
                        h2.conn.send_data(sid, chunk, end_stream=sent + size >= len(OVERSIZED))
                    except StreamClosedError:
                        closed = True  # answered and reset: the events are read below
                        continue
                    sent += len(chunk)
                    await h2.flush()
                    continue
            event = await h2.until(lambda e: getattr(e, "stream_id", None) in (sid, 0))
            if isinstance(event, ResponseReceived):
                status = int(dict(event.headers)[b":status"])
            elif isinstance(event, DataReceived):
                body += event.data
                h2.conn.acknowledge_received_data(event.flow_controlled_length, sid)
            elif isinstance(event, StreamEnded | StreamReset):
                return status, body
    finally:
        h2.close()


@pytest.mark.parametrize("protocol", CLIENTS)
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "streamed"])
async def test_a_body_over_the_cap_gets_413_naming_it(
    protocol: str, declared: bool, log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    await picker_gateway(gateway_factory, free_port, a, b)
    if protocol == "h2":
        status, text = await _h2_upload(free_port, declared)
    else:
        async with client(free_port, protocol) as c:
            response = await c.post("/v1", content=OVERSIZED if declared else _parts())
            status, text = response.status_code, response.content
    assert status == 413
    assert b"4194304 bytes" in text and b"4 MiB" in text
    async with client(free_port, protocol) as c:
        assert (await c.post("/v1", json={"model": "a"})).status_code == 200
    assert log.picks == [{"model": "a", "tried": []}]  # the oversized request was never picked
    assert a.stats.requests == 1


@pytest.mark.parametrize("protocol", CLIENTS)
async def test_a_rewritten_body_reaches_the_upstream_with_its_own_length(
    protocol: str, log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    rules = f"""    - filters:
        - type: ExtensionRef
          extensionRef: {{group: {GROUP}, kind: BodyRewrite, name: to-b}}
      backendRefs: [{{group: {GROUP}, kind: ModelPicker, name: models}}]
"""
    rewrite = f"""
---
apiVersion: {GROUP}/v1alpha1
kind: BodyRewrite
metadata: {{name: to-b, namespace: default}}
spec: {{model: b}}
"""
    await picker_gateway(gateway_factory, free_port, a, b, rules, rewrite)
    sent = {"model": "a", "stream": False, "messages": [{"role": "user", "content": "hello"}]}
    body = json.dumps(sent, indent=2).encode()  # spaces: the rewrite changes the length
    async with client(free_port, protocol) as c:
        response = await c.post("/body", content=body)
    assert response.status_code == 200
    forwarded = response.content
    assert json.loads(forwarded) == {**sent, "model": "b"} and len(forwarded) != len(body)
    assert response.headers["x-echo-backend"] == "b"  # the pick saw the rewritten body
    seen = b.stats.recent[-1]["headers"]
    assert seen["content-length"] == str(len(forwarded))
    assert "transfer-encoding" not in seen


async def test_expect_100_continue_is_answered_by_the_body_stage(
    log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    await picker_gateway(gateway_factory, free_port, a, b)
    body = b'{"model": "b"}'
    reader, writer = await asyncio.open_connection("127.0.0.1", free_port)
    try:
        writer.write(
            b"POST /v1 HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
            b"HTTP/1.1 100 Continue\r\n\r\n"
        )
        writer.write(body)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200 ")
    finally:
        writer.close()
    assert "expect" not in b.stats.recent[-1]["headers"]  # the body came with the request


# -- a pre-route stage -----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", CLIENTS)
async def test_a_pre_route_stage_header_selects_the_route(
    protocol: str, log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    policy = f"""
---
apiVersion: {GROUP}/v1alpha1
kind: ModelHeader
metadata: {{name: bbr, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw}}]
"""
    rules = """    - matches: [{headers: [{name: X-Gateway-Model-Name, value: b}]}]
      backendRefs: [{name: b, port: 80}]
    - backendRefs: [{name: a, port: 80}]
"""
    yaml = service_yaml("a", a.port) + service_yaml("b", b.port) + policy + route_yaml(rules)
    await start(gateway_factory, free_port, yaml)
    async with client(free_port, protocol) as c:
        to_b = await c.post("/v1/chat/completions", json={"model": "b"})
        to_a = await c.post("/v1/chat/completions", json={"model": "a"})
        bodiless = await c.get("/v1/models")
    assert to_b.headers["x-echo-backend"] == "b"
    assert json.loads(to_b.content)["headers"]["x-gateway-model-name"] == "b"
    assert to_a.headers["x-echo-backend"] == "a"
    assert bodiless.status_code == 200 and bodiless.headers["x-echo-backend"] == "a"


@pytest.mark.parametrize("protocol", CLIENTS)
async def test_a_body_a_pre_route_stage_replaced_reaches_any_backend(
    protocol: str, log: PathLog, echo: EchoServer, gateway_factory, free_port: int
) -> None:
    policy = f"""
---
apiVersion: {GROUP}/v1alpha1
kind: BodyStamp
metadata: {{name: stamp, namespace: default}}
spec:
  targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: gw, sectionName: http}}]
"""
    rules = "    - backendRefs: [{name: a, port: 80}]\n"
    await start(
        gateway_factory, free_port, service_yaml("a", echo.port) + policy + route_yaml(rules)
    )
    async with client(free_port, protocol) as c:
        response = await c.post("/body", content=b'{"model": "x"}')
    assert json.loads(response.content) == {"model": "x", "stamped": True}
    seen = echo.stats.recent[-1]["headers"]
    assert seen["content-length"] == str(len(response.content))


# -- a response tap --------------------------------------------------------------------------------

SSE_RULE = f"""    - filters:
        - type: ExtensionRef
          extensionRef: {{group: {GROUP}, kind: SseCount, name: count}}
      backendRefs: [{{name: a, port: 80}}]
"""


@pytest.mark.parametrize("protocol", CLIENTS)
async def test_a_tap_counts_the_events_of_a_stream(
    protocol: str, log: PathLog, echo: EchoServer, gateway_factory, free_port: int
) -> None:
    await start(gateway_factory, free_port, service_yaml("a", echo.port) + route_yaml(SSE_RULE))
    async with client(free_port, protocol) as c:
        response = await c.get("/sse?events=200&interval_ms=1")
    assert response.status_code == 200, response.text
    received = response.text.count("data:")
    assert received == 200
    await asyncio.wait_for(log.event("tap").wait(), 5)
    assert log.taps == [(True, 200)]


@pytest.mark.parametrize("protocol", CLIENTS)
async def test_a_tap_sees_the_client_leave_mid_stream(
    protocol: str, log: PathLog, echo: EchoServer, gateway_factory, free_port: int
) -> None:
    await start(gateway_factory, free_port, service_yaml("a", echo.port) + route_yaml(SSE_RULE))
    seen = 0
    async with (
        client(free_port, protocol) as c,
        c.stream("GET", "/sse?events=0&interval_ms=5") as response,
    ):
        async for line in response.aiter_lines():
            seen += line.startswith("data:")
            if seen == 5:
                break
    await asyncio.wait_for(log.event("tap").wait(), 5)
    ((complete, counted),) = log.taps
    assert complete is False and counted >= 5


async def test_a_slow_tap_never_delays_the_stream(
    log: PathLog, echo: EchoServer, gateway_factory, free_port: int
) -> None:
    rule = SSE_RULE.replace("kind: SseCount, name: count", "kind: SlowTap, name: slow")
    await start(gateway_factory, free_port, service_yaml("a", echo.port) + route_yaml(rule))
    async with client(free_port, "http/1.1") as c:
        response = await c.get("/sse?events=100&interval_ms=0")
    assert response.text.count("data:") == 100  # the whole stream, while the tap read nothing
    assert log.slow_tap == []
    log.event("slow-tap").set()
    await asyncio.wait_for(log.event("slow-tap-done").wait(), 5)
    assert log.slow_tap[0] == "head" and log.slow_tap[-1] == "end"
    assert log.slow_tap.count("body") >= 1  # every chunk the relay wrote, in order


async def test_a_mirror_to_a_backend_that_awaits_its_pick(
    log: PathLog, two_echoes, gateway_factory, free_port: int
) -> None:
    a, b = two_echoes
    mirror = picker_yaml("shadow", [("a", b.port, False)])
    rules = f"""    - filters:
        - type: RequestMirror
          requestMirror: {{backendRef: {{group: {GROUP}, kind: ModelPicker, name: shadow}}}}
      backendRefs: [{{group: {GROUP}, kind: ModelPicker, name: models}}]
"""
    await picker_gateway(gateway_factory, free_port, a, b, rules, mirror)
    async with client(free_port, "http/1.1") as c:
        response = await c.post("/v1", json={"model": "a"})
    assert response.status_code == 200 and response.headers["x-echo-backend"] == "a"
    while len(log.outcomes) < 2:  # the copy's outcome arrives when the mirror backend answered
        log.event("outcome").clear()
        await asyncio.wait_for(log.event("outcome").wait(), 5)
    assert b.stats.requests == 1 and b.stats.recent[-1]["body_length"] == len(b'{"model":"a"}')
    assert sorted(o["endpoint"] for o in log.outcomes) == sorted(
        [f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"]
    )
