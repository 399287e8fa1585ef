"""One upstream MCP server over Streamable HTTP: POST a message, read the JSON or SSE answer.

:meth:`Upstream.exchange` is an async context manager: the upstream's answer to one POST as a
:class:`Reply` whose messages arrive as the upstream sends them (an SSE answer is read event by
event, never buffered whole). Timeouts are idle ones: connecting, then each wait for the answer
to move; a stream may last as long as it keeps moving. The client's credentials are never sent
upstream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from agentgw.http1 import Http1Pool, HttpError, HttpTimeout, Origin, Response
from gateway.protocols.sse import SseError, SseReader
from gateway.tls.upstream import UpstreamTls

ACCEPT_BOTH = "application/json, text/event-stream"


class UpstreamError(Exception):
    """An upstream failed: unreachable, timed out, answered an HTTP error or garbage."""

    def __init__(self, target: str, message: str) -> None:
        super().__init__(f"target {target}: {message}")
        self.target = target


class UpstreamSessionGone(UpstreamError):
    """The upstream does not know the session id any more (404): initialise it again."""


@dataclass(slots=True)
class Reply:
    """An upstream's answer: the session id it set (on initialize) and its messages."""

    session_id: str | None
    messages: AsyncIterator[dict[str, Any]]
    streaming: bool = False  # an SSE answer: more than the response may come, when it likes


class Target(Protocol):
    """What the federation needs of a target, whatever carries its messages."""

    @property
    def name(self) -> str: ...

    @property
    def url(self) -> str: ...

    def exchange(
        self, pool: Http1Pool, message: dict[str, Any], session: str | None, version: str | None
    ) -> AbstractAsyncContextManager[Reply]:
        """Send ``message``; the reply."""
        ...

    def listen(
        self, pool: Http1Pool, session: str | None, version: str | None
    ) -> AbstractAsyncContextManager[AsyncIterator[dict[str, Any]] | None]:
        """The session's stream of what the target says unasked (None: it has none)."""
        ...

    async def terminate(self, pool: Http1Pool, session: str, version: str | None) -> None:
        """End the target's session."""
        ...


class Sessionless:
    """A target that says nothing unasked and holds no session: :meth:`listen` yields no
    stream, :meth:`terminate` ends nothing."""

    __slots__ = ()

    @contextlib.asynccontextmanager
    async def listen(
        self, pool: Http1Pool, session: str | None, version: str | None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]] | None]:
        yield None

    async def terminate(self, pool: Http1Pool, session: str, version: str | None) -> None:
        return None


@dataclass(frozen=True, slots=True)
class Upstream:
    """A Streamable HTTP target: its name, URL and the timeouts of calls to it."""

    name: str
    url: str
    connect_timeout: float
    idle_timeout: float
    tls: UpstreamTls | None = None  # a BackendTLSPolicy's settings (an https url otherwise)
    origin: Origin = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", Origin.of(self.url))

    def _headers(self, session: str | None, version: str | None, accept: str) -> dict[str, str]:
        headers = {"accept": accept, "content-type": "application/json"}
        if session is not None:
            headers["mcp-session-id"] = session
        if version is not None:
            headers["mcp-protocol-version"] = version
        return headers

    @contextlib.asynccontextmanager
    async def exchange(
        self,
        pool: Http1Pool,
        message: dict[str, Any],
        session: str | None,
        version: str | None,
    ) -> AsyncIterator[Reply]:
        """POST ``message``; the reply (no messages for a notification or a response)."""
        headers = self._headers(session, version, ACCEPT_BOTH)
        body = orjson.dumps(message)
        async with self._send(pool, "POST", headers, body, session) as response:
            content_type = response.headers.get("content-type", "")
            streaming = content_type.startswith("text/event-stream")
            session_id = response.headers.get("mcp-session-id")
            yield Reply(session_id, self._messages(response), streaming)

    @contextlib.asynccontextmanager
    async def listen(
        self, pool: Http1Pool, session: str | None, version: str | None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]] | None]:
        """The upstream's GET stream of the session (None when it offers none: 405)."""
        headers = self._headers(session, version, "text/event-stream")
        headers.pop("content-type")
        async with self._send(pool, "GET", headers, b"", session, idle=False) as response:
            yield None if response.status == 405 else self._messages(response)

    async def terminate(self, pool: Http1Pool, session: str, version: str | None) -> None:
        """DELETE the upstream session; failures are the upstream's business."""
        headers = self._headers(session, version, ACCEPT_BOTH)
        headers.pop("content-type")
        with contextlib.suppress(UpstreamError):
            async with self._send(pool, "DELETE", headers, b"", None, allow=(405,)) as response:
                await response.read()

    @contextlib.asynccontextmanager
    async def _send(
        self,
        pool: Http1Pool,
        method: str,
        headers: dict[str, str],
        body: bytes,
        session: str | None,
        idle: float | bool | None = True,
        allow: tuple[int, ...] = (405,),
    ) -> AsyncIterator[Response]:
        timeout = self.idle_timeout if idle else None
        try:
            response = await pool.request(
                method, self.origin, headers, body, self.connect_timeout, timeout, self.tls
            )
        except HttpTimeout as exc:
            raise UpstreamError(self.name, f"no answer from {self.url} (timed out)") from exc
        except HttpError as exc:
            raise UpstreamError(self.name, f"cannot reach {self.url}: {exc}") from exc
        try:
            status = response.status
            if status == 404 and session is not None:
                raise UpstreamSessionGone(self.name, "the upstream session expired")
            if status >= 400 and status not in allow:
                text = (await self._read(response))[:200].decode(errors="replace")
                raise UpstreamError(self.name, f"HTTP {status} from {self.url}: {text}")
            yield response
        finally:
            response.close()

    async def _read(self, response: Response) -> bytes:
        try:
            return await response.read()
        except HttpTimeout as exc:
            raise UpstreamError(self.name, str(exc)) from exc
        except HttpError as exc:
            raise UpstreamError(self.name, f"the answer broke off: {exc}") from exc

    async def _messages(self, response: Response) -> AsyncIterator[dict[str, Any]]:
        if response.status == 202:
            await self._read(response)
            return
        content_type = response.headers.get("content-type", "")
        if content_type.startswith("application/json"):
            yield _decode(self.name, await self._read(response))
            return
        if not content_type.startswith("text/event-stream"):
            raise UpstreamError(self.name, f"unexpected content type {content_type!r}")
        reader = SseReader()
        try:
            async for chunk in response.chunks():
                for event in reader.feed(chunk):
                    if event.data:  # an empty event only primes resumption
                        yield _decode(self.name, event.data.encode())
        except HttpTimeout as exc:
            raise UpstreamError(self.name, str(exc)) from exc
        except HttpError as exc:
            raise UpstreamError(self.name, f"the answer broke off: {exc}") from exc
        except SseError as exc:
            raise UpstreamError(self.name, f"bad event stream: {exc}") from exc


def _decode(target: str, data: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(target, f"the answer is not JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise UpstreamError(target, "the answer is not a JSON-RPC message")
    return value
