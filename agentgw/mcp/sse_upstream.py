"""Legacy HTTP+SSE targets (MCP 2024-11-05): a GET stream per session, messages POSTed apart.

The stream's first event (``endpoint``) names the URL to POST messages to; answers and
everything else the server says arrive on the stream, so the session is a
:class:`~agentgw.mcp.channel.Channel` named in the session id. The stream stays open as long as
the session (it is closed by DELETE, when idle for ``idle_kill`` seconds, and at stop).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import orjson

from agentgw.http1 import Http1Pool, HttpError, Origin, Response
from agentgw.mcp.channel import Channel, Channels, ChannelUpstream
from agentgw.mcp.upstream import UpstreamError
from gateway.protocols.sse import SseError, SseReader

log = logging.getLogger("agentgw.mcp.sse")


@dataclass(frozen=True, slots=True)
class SseUpstream(ChannelUpstream):
    """A legacy SSE target: the stream's URL and the timeouts of calls to it."""

    name: str
    url: str
    connect_timeout: float
    idle_timeout: float
    channels: Channels
    idle_kill: float = 1800.0
    origin: Origin = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "origin", Origin.of(self.url))

    async def _open(self, pool: Http1Pool) -> tuple[str, Channel]:
        await self.channels.reap(self.name, self.idle_kill)
        try:
            stream = await pool.request(
                "GET",
                self.origin,
                {"accept": "text/event-stream"},
                b"",
                self.connect_timeout,
                None,
            )
        except HttpError as exc:
            raise UpstreamError(self.name, f"cannot reach {self.url}: {exc}") from exc
        if stream.status != 200:
            stream.close()
            raise UpstreamError(self.name, f"HTTP {stream.status} from {self.url}")
        endpoint: asyncio.Future[Origin] = asyncio.get_running_loop().create_future()

        async def send(message: dict[str, Any]) -> None:
            headers = {"content-type": "application/json"}
            try:
                posted = await pool.request(
                    "POST",
                    endpoint.result(),
                    headers,
                    orjson.dumps(message),
                    self.connect_timeout,
                    self.idle_timeout,
                )
                body = await posted.read()
                posted.close()
            except HttpError as exc:
                raise UpstreamError(self.name, f"posting a message: {exc}") from exc
            if posted.status >= 400:
                text = body[:200].decode(errors="replace")
                raise UpstreamError(self.name, f"HTTP {posted.status} posting a message: {text}")

        async def close() -> None:
            stream.close()

        name = f"{self.name}-{secrets.token_hex(8)}"
        channel = Channel(self.name, send, close)
        channel.tasks = [asyncio.create_task(self._read(name, channel, stream, endpoint))]
        self.channels.running[name] = channel
        try:
            await asyncio.wait_for(asyncio.shield(endpoint), self.connect_timeout)
        except (TimeoutError, UpstreamError) as exc:
            await self.channels.end(name)
            raise UpstreamError(self.name, f"no endpoint event from {self.url}") from exc
        return name, channel

    async def _read(
        self, name: str, channel: Channel, stream: Response, endpoint: asyncio.Future[Origin]
    ) -> None:
        reader = SseReader()
        reason = "the stream ended"
        try:
            async for chunk in stream.chunks():
                for event in reader.feed(chunk):
                    if event.event == "endpoint" and not endpoint.done():
                        endpoint.set_result(Origin.of(urljoin(self.url, event.data)))
                    elif event.event == "message" and event.data:
                        message = orjson.loads(event.data)
                        if isinstance(message, dict):
                            channel.deliver(message)
        except (HttpError, SseError, orjson.JSONDecodeError) as exc:
            reason = f"the stream broke: {exc}"
        if not endpoint.done():
            endpoint.set_exception(UpstreamError(self.name, reason))
        if self.channels.running.get(name) is channel:
            log.warning("mcp sse %s: %s", self.name, reason)
        self.channels.died(name, channel)
        channel.failed(reason)
