"""The responder lifespan manager on its own (no sockets): the ASGI lifespan protocol, uvicorn's
"auto" mode, failures, timeouts, retirement and identity across snapshots."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette

from gateway.proxy.lifespan import Lifespans

Scope = dict[str, Any]


class Snapshot:
    """What Lifespans reads of a snapshot."""

    def __init__(self, *responders: Any) -> None:
        self.responders = responders


def recording_app(events: list[str]) -> Starlette:
    """A Starlette app whose lifespan records startup and shutdown and fills the state."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        events.append("startup")
        yield {"pool": "ready"}
        events.append("shutdown")

    return Starlette(lifespan=lifespan)


async def test_startup_fills_the_state_and_close_shuts_down() -> None:
    events: list[str] = []
    app = recording_app(events)
    lifespans = Lifespans()
    await lifespans.prepare(Snapshot(app))  # type: ignore[arg-type]
    entry = lifespans.get(app)
    assert entry is not None and entry.supported and entry.failure is None
    assert entry.state == {"pool": "ready"} and events == ["startup"]
    await lifespans.close(grace=0.1)
    assert events == ["startup", "shutdown"] and lifespans.get(app) is None


async def test_startup_failed_is_remembered_with_its_message() -> None:
    async def failing(scope: Scope, receive: Any, send: Any) -> None:
        assert (await receive())["type"] == "lifespan.startup"
        await send({"type": "lifespan.startup.failed", "message": "no database"})

    lifespans = Lifespans()
    await lifespans.start([failing])
    entry = lifespans.get(failing)
    assert entry is not None and entry.failure == "lifespan startup failed: no database"
    await lifespans.close(grace=0.1)


async def test_an_app_that_raises_on_the_lifespan_scope_has_none() -> None:
    async def http_only(scope: Scope, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"

    lifespans = Lifespans()
    await lifespans.start([http_only])
    entry = lifespans.get(http_only)
    assert entry is not None and not entry.supported and entry.failure is None
    await lifespans.close(grace=0.1)
    assert lifespans.get(http_only) is None


async def test_a_startup_that_does_not_answer_in_time_fails_the_app() -> None:
    async def silent(scope: Scope, receive: Any, send: Any) -> None:
        await receive()
        await asyncio.Event().wait()  # never answers lifespan.startup

    lifespans = Lifespans(startup_timeout=0.2)
    await lifespans.start([silent])
    entry = lifespans.get(silent)
    assert entry is not None and entry.failure == "lifespan startup did not complete within 0.2s"
    await lifespans.close(grace=0.1)
    assert lifespans.get(silent) is None


async def test_an_app_in_consecutive_snapshots_starts_once() -> None:
    events: list[str] = []
    app, other = recording_app(events), recording_app([])
    lifespans = Lifespans()
    for snapshot in (Snapshot(app), Snapshot(app, other), Snapshot(other, app)):
        await lifespans.prepare(snapshot)  # type: ignore[arg-type]
        lifespans.activate(snapshot)  # type: ignore[arg-type]
    await lifespans.settled()
    assert events == ["startup"]
    lifespans.activate(Snapshot(other))  # type: ignore[arg-type]
    await lifespans.settled()
    assert events == ["startup", "shutdown"] and lifespans.get(app) is None
    await lifespans.close(grace=0.1)


async def test_a_retired_app_waits_for_its_calls_then_cancels_them_after_the_grace() -> None:
    events: list[str] = []
    app = recording_app(events)
    lifespans = Lifespans(grace=0.2)
    await lifespans.start([app])
    entry = lifespans.get(app)
    assert entry is not None

    class Call:
        task = asyncio.get_running_loop().create_task(asyncio.Event().wait())

    entry.calls.add(Call)  # type: ignore[arg-type]
    lifespans.activate(Snapshot())  # type: ignore[arg-type]
    await lifespans.settled()
    assert Call.task.cancelled() and events == ["startup", "shutdown"]


async def test_an_app_taken_back_before_its_shutdown_keeps_running() -> None:
    events: list[str] = []
    app = recording_app(events)
    lifespans = Lifespans()
    await lifespans.start([app])
    entry = lifespans.get(app)
    assert entry is not None
    # A call in flight keeps the dropped app draining ...
    sentinel: Any = object()
    entry.calls.add(sentinel)
    lifespans.activate(Snapshot())  # type: ignore[arg-type]
    await asyncio.sleep(0)  # one loop turn: the retirement task starts waiting for the call
    # ... until a newer snapshot holds it again: it keeps running, no second startup.
    await lifespans.start([app])
    entry.call_ended(sentinel)
    await lifespans.settled()
    assert lifespans.get(app) is entry and events == ["startup"]
    await lifespans.close(grace=0.1)
    assert events == ["startup", "shutdown"]
