"""The ASGI lifespan of in-gateway responders: started before a snapshot serves, stopped after.

Each serving process (each ``--workers`` worker) owns one :class:`Lifespans`. Before a snapshot
becomes the current one (the first, then each reload's), every responder app it lists that is
not running yet gets ``lifespan.startup``, awaited and bounded by ``startup_timeout``. Once a
snapshot is current, apps it no longer holds are retired: their calls in flight may finish for
``grace`` seconds (then they are cancelled), then they get ``lifespan.shutdown``. An app object
that stays in consecutive snapshots keeps running: identity, not equality, decides.

As uvicorn's "auto" mode does, an app that raises (or returns) before answering
``lifespan.startup`` does not support the protocol and is served without one. An app that
answers ``lifespan.startup.failed``, or does not answer in time, is logged and answers 503 naming
the failure; the rest of the gateway serves. The ``state`` dict the app filled during startup is
shallow-copied into each request's scope.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.proxy.responder import AsgiCall
    from gateway.snapshot import Snapshot

log = logging.getLogger(__name__)

Message = dict[str, Any]

_STARTUP: Message = {"type": "lifespan.startup"}
_SHUTDOWN: Message = {"type": "lifespan.shutdown"}


def describe_app(app: object) -> str:
    """A name for an ASGI app in logs: its module-qualified name or its class's."""
    named = app if hasattr(app, "__qualname__") else type(app)
    return f"{getattr(named, '__module__', '?')}.{getattr(named, '__qualname__', '?')}"


class AppLifespan:
    """One responder app in this process: its lifespan state dict and its calls in flight.

    ``failure`` is set when startup failed (the app answers 503); ``stopped`` once it was shut
    down (a late request that still holds an old snapshot gets 503 too).
    """

    __slots__ = (
        "_idle",
        "_received",
        "_reported",
        "_shutdown_asked",
        "_shutdown_done",
        "_startup_done",
        "_task",
        "app",
        "calls",
        "failure",
        "state",
        "stopped",
        "supported",
    )

    def __init__(self, app: Any) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self.calls: set[AsgiCall] = set()  # also what keeps their tasks alive
        self.failure: str | None = None
        self.stopped = False
        self.supported = True
        self._task: asyncio.Task[None] | None = None
        self._received = 0  # receive() calls: the first gets lifespan.startup
        self._reported = False  # the app answered lifespan.startup (complete or failed)
        self._startup_done: asyncio.Future[None] | None = None
        self._shutdown_asked: asyncio.Future[None] | None = None
        self._shutdown_done: asyncio.Future[None] | None = None
        self._idle: asyncio.Future[None] | None = None

    # -- calls in flight ----------------------------------------------------------------------

    def call_ended(self, call: AsgiCall) -> None:
        """A call finished; wake a retirement waiting for the last one."""
        calls = self.calls
        calls.discard(call)
        if not calls and self._idle is not None and not self._idle.done():
            self._idle.set_result(None)

    async def drain(self, grace: float) -> None:
        """Let the calls in flight finish for ``grace`` seconds, then cancel the rest."""
        if not self.calls:
            return
        self._idle = asyncio.get_running_loop().create_future()
        try:
            await asyncio.wait_for(asyncio.shield(self._idle), grace)
        except TimeoutError:
            tasks = [call.task for call in self.calls if call.task is not None]
            log.warning(
                "responder %s: %d call(s) still running after %.1fs: cancelled",
                describe_app(self.app),
                len(tasks),
                grace,
            )
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- the lifespan protocol ----------------------------------------------------------------

    async def startup(self, timeout: float) -> None:
        """Send ``lifespan.startup`` and wait for the answer (at most ``timeout`` seconds)."""
        loop = asyncio.get_running_loop()
        self._startup_done = loop.create_future()
        self._shutdown_asked = loop.create_future()
        self._shutdown_done = loop.create_future()
        self._task = loop.create_task(self._main())
        try:
            await asyncio.wait_for(asyncio.shield(self._startup_done), timeout)
        except TimeoutError:
            self.failure = f"lifespan startup did not complete within {timeout:g}s"
            log.error("responder %s: %s", describe_app(self.app), self.failure)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        if self.failure is None and self.supported:
            log.info("responder %s: lifespan started", describe_app(self.app))

    async def shutdown(self, timeout: float) -> None:
        """Send ``lifespan.shutdown`` (if it started) and wait for the answer or ``timeout``."""
        self.stopped = True
        task = self._task
        if task is None or task.done() or not self.supported or self.failure is not None:
            return
        assert self._shutdown_asked is not None and self._shutdown_done is not None
        self._shutdown_asked.set_result(None)
        try:
            await asyncio.wait_for(asyncio.shield(self._shutdown_done), timeout)
        except TimeoutError:
            log.error(
                "responder %s: lifespan shutdown did not complete within %gs: cancelled",
                describe_app(self.app),
                timeout,
            )
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        log.info("responder %s: lifespan stopped", describe_app(self.app))

    async def _main(self) -> None:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        try:
            await self.app(scope, self._receive, self._send)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not self._reported:
                # uvicorn's "auto" mode: an app that fails on the lifespan scope has none.
                self.supported = False
                log.info(
                    "responder %s does not support the ASGI lifespan protocol (%s: %s); "
                    "serving it without one",
                    describe_app(self.app),
                    type(exc).__name__,
                    exc,
                )
            elif self.failure is None:
                log.exception("responder %s: lifespan failed", describe_app(self.app))
        else:
            if not self._reported:
                self.supported = False  # returned without answering: no lifespan either
        finally:
            for waiter in (self._startup_done, self._shutdown_done):
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)

    async def _receive(self) -> Message:
        self._received += 1
        if self._received == 1:
            return dict(_STARTUP)
        await self._shutdown_asked  # type: ignore[misc]
        return dict(_SHUTDOWN)

    async def _send(self, message: Message) -> None:
        kind = message.get("type")
        startup = self._startup_done
        shutdown = self._shutdown_done
        assert startup is not None and shutdown is not None
        if kind == "lifespan.startup.complete" and not startup.done():
            self._reported = True
            startup.set_result(None)
        elif kind == "lifespan.startup.failed" and not startup.done():
            self._reported = True
            text = str(message.get("message") or "").strip()
            # Starlette sends a whole traceback: clients get its last line, the log all of it.
            last = text.splitlines()[-1] if text else "no message"
            self.failure = f"lifespan startup failed: {last}"
            log.error("responder %s: lifespan startup failed: %s", describe_app(self.app), text)
            startup.set_result(None)
        elif kind == "lifespan.shutdown.complete" and not shutdown.done():
            shutdown.set_result(None)
        elif kind == "lifespan.shutdown.failed" and not shutdown.done():
            log.error(
                "responder %s: lifespan shutdown failed: %s",
                describe_app(self.app),
                message.get("message") or "no message",
            )
            shutdown.set_result(None)
        else:
            raise RuntimeError(f"unexpected ASGI lifespan message {kind!r}")


class Lifespans:
    """The lifespans of one serving process's responder apps (see the module docstring)."""

    def __init__(
        self, startup_timeout: float = 30.0, shutdown_timeout: float = 30.0, grace: float = 30.0
    ) -> None:
        self.startup_timeout = startup_timeout
        self.shutdown_timeout = shutdown_timeout
        self.grace = grace  # how long calls of a retired app may finish after a reload
        self._apps: dict[int, AppLifespan] = {}  # by id(app): the entry keeps the app alive
        self._retiring: dict[int, asyncio.Task[None]] = {}

    def get(self, app: object) -> AppLifespan | None:
        """The app's entry; None when this process does not run it (it was retired)."""
        return self._apps.get(id(app))

    async def prepare(self, snapshot: Snapshot) -> None:
        """Start the snapshot's responder apps not running yet (before it becomes current)."""
        await self.start(snapshot.responders)

    async def start(self, apps: Iterable[object]) -> None:
        """Start ``apps`` that have no entry yet, concurrently, each bounded by the timeout."""
        new: list[AppLifespan] = []
        for app in apps:
            key = id(app)
            retiring = self._retiring.get(key)
            if retiring is not None:
                entry = self._apps.get(key)
                if entry is not None and not entry.stopped:
                    # Dropped by a reload and taken back before its shutdown began: keep it.
                    self._retiring.pop(key, None)
                    retiring.cancel()
                    continue
                await asyncio.wait([retiring])  # shutting down: let it end, then start again
            if key in self._apps:
                continue
            entry = self._apps[key] = AppLifespan(app)
            new.append(entry)
        if new:
            await asyncio.gather(*(entry.startup(self.startup_timeout) for entry in new))

    def activate(self, snapshot: Snapshot) -> None:
        """``snapshot`` is current now: retire the apps it does not hold, in the background."""
        held = {id(app) for app in snapshot.responders}
        for key in list(self._apps):
            if key not in held and key not in self._retiring:
                task = asyncio.get_running_loop().create_task(self._retire(key, self.grace))
                self._retiring[key] = task

    async def _retire(self, key: int, grace: float) -> None:
        entry = self._apps[key]
        try:
            await entry.drain(grace)
        except asyncio.CancelledError:
            entry._idle = None  # taken back by a newer snapshot: it keeps running
            raise
        try:
            await entry.shutdown(self.shutdown_timeout)
        finally:
            if self._apps.get(key) is entry:
                del self._apps[key]
            self._retiring.pop(key, None)

    async def settled(self) -> None:
        """Wait for the retirements under way (apps a reload dropped) to end."""
        retiring = list(self._retiring.values())
        if retiring:
            await asyncio.wait(retiring)

    async def close(self, grace: float) -> None:
        """Process shutdown: every app's calls get ``grace`` seconds, then every app stops."""
        for key in list(self._apps):
            if key not in self._retiring:
                self._retiring[key] = asyncio.get_running_loop().create_task(
                    self._retire(key, grace)
                )
        await asyncio.gather(*list(self._retiring.values()), return_exceptions=True)
