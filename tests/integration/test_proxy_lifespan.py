"""The ASGI lifespan of in-gateway responders in a serving process: startup before the first
request, shutdown once a reload drops the app (after its calls in flight), failures answered 503,
apps without lifespan support served as they are."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from tests.fixtures.responder_gateway import StartResponders

BOTH_LOOPS = True  # asyncio's and uvloop's (tests/fixtures/loops.py)

Scope = dict[str, Any]


def recording_app(events: list[str], name: str = "db", prefix: str = "") -> Starlette:
    """A Starlette app whose lifespan records its events and puts ``name`` into the state;
    ``<prefix>/state`` answers the state the request scope carries; ``<prefix>/hold`` streams
    until ``app.state.release`` is set."""
    release = asyncio.Event()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"resource": name}
        events.append("shutdown")

    async def state(request: Request) -> Response:
        return PlainTextResponse(request.state.resource)

    async def hold(request: Request) -> Response:
        async def body() -> AsyncIterator[bytes]:
            yield b"held\n"
            await release.wait()
            yield b"released\n"

        return StreamingResponse(body())

    routes = [Route(f"{prefix}/state", state), Route(f"{prefix}/hold", hold)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.release = release
    return app


@pytest.mark.parametrize("protocol", ["http1", "http2"])
async def test_startup_before_the_first_request_and_shutdown_after_a_reload_drops_the_app(
    start_responders: StartResponders, responder_plugin: dict[str, Any], protocol: str
) -> None:
    events: list[str] = []
    kept_events: list[str] = []
    responder_plugin["kept"] = kept = recording_app(kept_events, "kept", "/kept")
    responder_plugin["dropped"] = recording_app(events, "pool")
    gateway = await start_responders({"/kept": "kept", "/": "dropped"})
    assert events == ["startup"]  # before any request
    async with gateway.client(protocol) as client:
        response = await client.get("/state")
        assert (response.status_code, response.text) == (200, "pool")
        async with client.stream("GET", "/hold") as held:
            lines = held.aiter_lines()
            assert await anext(lines) == "held"
            await gateway.reload({"/kept": "kept"})
            # The reload dropped the app, but a call of it is still in flight: no shutdown yet.
            assert events == ["startup"]
            assert (await client.get("/state")).status_code == 404
            responder_plugin["dropped"].state.release.set()
            assert await anext(lines) == "released"
        await gateway.process.lifespans.settled()
        assert events == ["startup", "shutdown"]
        # The app that stayed in the new snapshot kept running: one startup, same state.
        assert kept_events == ["startup"]
        assert gateway.process.lifespans.get(kept) is not None
        assert (await client.get("/kept/state")).text == "kept"
    gateway.process.stop()
    await gateway.process.run_until_stopped()
    assert kept_events == ["startup", "shutdown"]


async def test_a_failed_startup_answers_503_naming_it_and_the_rest_serves(
    start_responders: StartResponders, responder_plugin: dict[str, Any]
) -> None:
    @contextlib.asynccontextmanager
    async def broken(app: Starlette) -> AsyncIterator[None]:
        raise ConnectionError("database unreachable")
        yield

    events: list[str] = []
    responder_plugin["broken"] = Starlette(lifespan=broken)
    responder_plugin["fine"] = recording_app(events)
    gateway = await start_responders({"/broken": "broken", "/": "fine"})
    async with gateway.client("http1") as client:
        response = await client.get("/broken/anything")
        assert response.status_code == 503
        assert "AsgiApp default/broken" in response.text
        assert "ConnectionError: database unreachable" in response.text
        assert "Traceback" not in response.text  # the traceback goes to the log only
        assert (await client.get("/state")).text == "db"
    (failed, _) = gateway.access_log()
    assert (failed["status"], failed["response_flags"]) == (503, "UH")


async def test_an_app_without_lifespan_support_is_served_without_one(
    start_responders: StartResponders, responder_plugin: dict[str, Any]
) -> None:
    scopes: list[str] = []

    async def plain(scope: Scope, receive: Any, send: Any) -> None:
        scopes.append(scope["type"])
        if scope["type"] != "http":
            raise ValueError(f"unsupported scope {scope['type']}")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": repr(scope["state"]).encode()})

    responder_plugin["plain"] = plain
    gateway = await start_responders({"/": "plain"})
    entry = gateway.process.lifespans.get(plain)
    assert entry is not None and not entry.supported and entry.failure is None
    async with gateway.client("http1") as client:
        response = await client.get("/")
    assert (response.status_code, response.text) == (200, "{}")
    assert scopes == ["lifespan", "http"]
