"""One upstream MCP server over Streamable HTTP: POST a message, read the JSON or SSE answer.

:meth:`Upstream.exchange` is an async context manager: the upstream's answer to one POST as a
:class:`Reply` whose messages arrive as the upstream sends them (an SSE answer is read event by
event, never buffered whole). Timeouts are idle ones: connecting, then each read and write; a
stream may last as long as it keeps moving. The client's credentials are never sent upstream.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from gateway.protocols.sse import SseError, SseReader

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


@dataclass(frozen=True, slots=True)
class Upstream:
    """A Streamable HTTP target: its name, URL and the timeouts of calls to it."""

    name: str
    url: str
    connect_timeout: float
    idle_timeout: float

    def _headers(self, session: str | None, version: str | None, accept: str) -> dict[str, str]:
        headers = {"accept": accept, "content-type": "application/json"}
        if session is not None:
            headers["mcp-session-id"] = session
        if version is not None:
            headers["mcp-protocol-version"] = version
        return headers

    def _timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout,
            read=self.idle_timeout,
            write=self.idle_timeout,
            pool=self.connect_timeout,
        )

    @contextlib.asynccontextmanager
    async def exchange(
        self,
        client: httpx.AsyncClient,
        message: dict[str, Any],
        session: str | None,
        version: str | None,
    ) -> AsyncIterator[Reply]:
        """POST ``message``; the reply (no messages for a notification or a response)."""
        request = client.build_request(
            "POST",
            self.url,
            content=orjson.dumps(message),
            headers=self._headers(session, version, ACCEPT_BOTH),
            timeout=self._timeout(),
        )
        async with self._send(client, request, session) as response:
            streaming = response.headers.get("content-type", "").startswith("text/event-stream")
            session_id = response.headers.get("mcp-session-id")
            yield Reply(session_id, self._messages(response), streaming)

    @contextlib.asynccontextmanager
    async def listen(
        self, client: httpx.AsyncClient, session: str | None, version: str | None
    ) -> AsyncIterator[AsyncIterator[dict[str, Any]] | None]:
        """The upstream's GET stream of the session (None when it offers none: 405)."""
        request = client.build_request(
            "GET",
            self.url,
            headers=self._headers(session, version, "text/event-stream"),
            timeout=httpx.Timeout(self.connect_timeout, read=None),
        )
        async with self._send(client, request, session, allow_405=True) as response:
            yield None if response.status_code == 405 else self._messages(response)

    async def terminate(self, client: httpx.AsyncClient, session: str, version: str | None) -> None:
        """DELETE the upstream session; failures are the upstream's business."""
        headers = self._headers(session, version, ACCEPT_BOTH)
        with contextlib.suppress(httpx.HTTPError):
            await client.delete(self.url, headers=headers, timeout=self._timeout())

    @contextlib.asynccontextmanager
    async def _send(
        self,
        client: httpx.AsyncClient,
        request: httpx.Request,
        session: str | None,
        allow_405: bool = False,
    ) -> AsyncIterator[httpx.Response]:
        try:
            response = await client.send(request, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamError(self.name, f"no answer from {self.url} (timed out)") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(self.name, f"cannot reach {self.url}: {exc!r}") from exc
        try:
            status = response.status_code
            if status == 404 and session is not None:
                raise UpstreamSessionGone(self.name, "the upstream session expired")
            if status >= 400 and not (allow_405 and status == 405):
                text = (await response.aread())[:200].decode(errors="replace")
                raise UpstreamError(self.name, f"HTTP {status} from {self.url}: {text}")
            yield response
        finally:
            await response.aclose()

    async def _messages(self, response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
        if response.status_code == 202:
            return
        content_type = response.headers.get("content-type", "")
        try:
            if content_type.startswith("application/json"):
                yield _decode(self.name, await response.aread())
                return
            if not content_type.startswith("text/event-stream"):
                raise UpstreamError(self.name, f"unexpected content type {content_type!r}")
            reader = SseReader()
            async for chunk in response.aiter_bytes():
                for event in reader.feed(chunk):
                    if event.data:  # an empty event only primes resumption
                        yield _decode(self.name, event.data.encode())
        except httpx.TimeoutException as exc:
            raise UpstreamError(self.name, "idle timeout: the upstream stopped sending") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(self.name, f"the answer broke off: {exc!r}") from exc
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
