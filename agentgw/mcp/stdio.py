"""stdio targets: an MCP server as a child process, one per session, newline-delimited JSON.

The child's "session id" is a name this process gave it at ``initialize``; another process (a
replica, a restarted gateway) does not have the child, answers as an upstream whose session
expired, and the federation initialises a new child. Answers are matched to requests by id;
everything else the child says (notifications, its own requests) goes to the session's GET
stream. stderr lines go to the log. A child is killed with its session (DELETE), when it has
been idle for ``idle_kill`` seconds, and when the gateway stops; one that died is started
again on the next request, no sooner than its back-off (doubling up to a minute). Children get
only ``HOME``, ``LOGNAME``, ``PATH``, ``SHELL``, ``TERM``, ``USER`` of the gateway's
environment, plus the target's ``env``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from agentgw.mcp.http1 import Http1Pool
from agentgw.mcp.upstream import Reply, UpstreamError, UpstreamSessionGone

log = logging.getLogger("agentgw.mcp.stdio")

_INHERITED = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER")
_MAX_LINE = 4 << 20
_BACKOFF_MAX = 60.0


@dataclass(slots=True)
class _Child:
    """A running stdio server and the requests waiting for its answers."""

    process: asyncio.subprocess.Process
    pending: dict[Any, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    events: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    used: float = field(default_factory=time.monotonic)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def alive(self) -> bool:
        return self.process.returncode is None


@dataclass(slots=True)
class Children:
    """Every stdio child of this process, by the name its session knows it by."""

    running: dict[str, _Child] = field(default_factory=dict)
    backoff: dict[str, tuple[float, float]] = field(default_factory=dict)  # target -> (until, s)

    async def stop(self) -> None:
        """Kill every child (the gateway stops)."""
        for name in list(self.running):
            await self.kill(name)

    async def kill(self, name: str) -> None:
        child = self.running.pop(name, None)
        if child is None:
            return
        if child.alive:
            child.process.kill()
        with contextlib.suppress(ProcessLookupError):
            await child.process.wait()
        for task in child.tasks:
            task.cancel()
        await asyncio.gather(*child.tasks, return_exceptions=True)
        for future in child.pending.values():
            if not future.done():
                future.set_exception(ConnectionError("the child was killed"))


@dataclass(frozen=True, slots=True)
class StdioUpstream:
    """A stdio target: the command that starts its server, and the children it has."""

    name: str
    command: str
    args: tuple[str, ...]
    env: Mapping[str, str]
    idle_timeout: float
    children: Children
    idle_kill: float = 1800.0

    @property
    def url(self) -> str:
        return f"stdio:{self.command}"

    async def _spawn(self) -> tuple[str, _Child]:
        now = time.monotonic()
        until, _ = self.children.backoff.get(self.name, (0.0, 0.0))
        if now < until:
            raise UpstreamError(self.name, f"the server died; restarting in {until - now:.1f}s")
        await self._reap(now)
        environment = {k: os.environ[k] for k in _INHERITED if k in os.environ} | dict(self.env)
        try:
            process = await asyncio.create_subprocess_exec(
                self.command,
                *self.args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=environment,
                limit=_MAX_LINE,
            )
        except OSError as exc:
            raise UpstreamError(self.name, f"cannot start {self.command}: {exc}") from exc
        name = f"{self.name}-{secrets.token_hex(8)}"
        child = _Child(process)
        child.tasks = [
            asyncio.create_task(self._read(name, child)),
            asyncio.create_task(self._stderr(child)),
        ]
        self.children.running[name] = child
        log.info("mcp stdio %s: started %s (pid %d)", self.name, self.command, process.pid)
        return name, child

    async def _reap(self, now: float) -> None:
        for name, child in list(self.children.running.items()):
            if name.startswith(f"{self.name}-") and now - child.used > self.idle_kill:
                await self.children.kill(name)

    async def _read(self, name: str, child: _Child) -> None:
        stdout = child.process.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                try:
                    message = orjson.loads(line)
                except orjson.JSONDecodeError:
                    log.warning("mcp stdio %s: not JSON on stdout: %.200r", self.name, line)
                    continue
                if not isinstance(message, dict):
                    continue
                future = (
                    child.pending.pop(message.get("id"), None) if "method" not in message else None
                )
                if future is not None and not future.done():
                    future.set_result(message)
                else:
                    await child.events.put(message)
        except (ValueError, OSError) as exc:
            log.warning("mcp stdio %s: reading stdout: %s", self.name, exc)
        finally:
            await self._died(name, child)

    async def _died(self, name: str, child: _Child) -> None:
        code = await child.process.wait()
        if self.children.running.get(name) is child:
            del self.children.running[name]
            _, last = self.children.backoff.get(self.name, (0.0, 0.0))
            delay = min(_BACKOFF_MAX, last * 2 if last else 0.5)
            self.children.backoff[self.name] = (time.monotonic() + delay, delay)
            log.warning("mcp stdio %s: the server exited with %s", self.name, code)
        for future in child.pending.values():
            if not future.done():
                future.set_exception(ConnectionError(f"the server exited with {code}"))

    async def _stderr(self, child: _Child) -> None:
        stderr = child.process.stderr
        assert stderr is not None
        with contextlib.suppress(ValueError, OSError):
            while line := await stderr.readline():
                log.info("mcp stdio %s: %s", self.name, line.decode(errors="replace").rstrip())

    def _child(self, session: str | None) -> _Child:
        child = self.children.running.get(session or "")
        if child is None or not child.alive:
            raise UpstreamSessionGone(self.name, "no server process for the session here")
        child.used = time.monotonic()
        return child

    async def _write(self, child: _Child, message: dict[str, Any]) -> None:
        stdin = child.process.stdin
        assert stdin is not None
        try:
            stdin.write(orjson.dumps(message) + b"\n")
            await stdin.drain()
        except (ConnectionError, OSError) as exc:
            raise UpstreamError(self.name, f"the server's stdin is closed: {exc}") from exc

    @contextlib.asynccontextmanager
    async def exchange(
        self,
        pool: Http1Pool,
        message: dict[str, Any],
        session: str | None,
        version: str | None,
    ) -> AsyncIterator[Reply]:
        """Write ``message`` to the session's child (a new child for ``initialize``); the
        reply holds the answer to a request, nothing for a notification or a response."""
        if message.get("method") == "initialize" and session is None:
            session, child = await self._spawn()
        else:
            child = self._child(session)
        if "method" not in message or "id" not in message:
            await self._write(child, message)
            yield Reply(session, _nothing())
            return
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        child.pending[message["id"]] = future
        try:
            await self._write(child, message)
            yield Reply(session, self._answer(future))
        finally:
            child.pending.pop(message["id"], None)

    async def _answer(
        self, future: asyncio.Future[dict[str, Any]]
    ) -> AsyncIterator[dict[str, Any]]:
        try:
            yield await asyncio.wait_for(asyncio.shield(future), self.idle_timeout)
        except TimeoutError as exc:
            raise UpstreamError(self.name, "idle timeout: the server did not answer") from exc
        except ConnectionError as exc:
            raise UpstreamError(self.name, str(exc)) from exc

    @contextlib.asynccontextmanager
    async def listen(
        self, pool: Http1Pool, session: str | None, version: str | None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]] | None]:
        """What the child says besides answers, as long as it runs."""
        child = self._child(session)

        async def events() -> AsyncIterator[dict[str, Any]]:
            while child.alive or not child.events.empty():
                yield await child.events.get()

        yield events()

    async def terminate(self, pool: Http1Pool, session: str, version: str | None) -> None:
        """Kill the session's child."""
        await self.children.kill(session)


async def _nothing() -> AsyncIterator[dict[str, Any]]:
    return
    yield  # an empty async generator
