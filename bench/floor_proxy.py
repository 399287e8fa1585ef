"""The floor: the least a Python proxy on uvloop + httptools can do per request.

Run as ``python -m bench.floor_proxy LISTEN_PORT UPSTREAM_PORT``. One upstream keep-alive
connection per client connection, requests forwarded as received (no routing, no header
rewriting, no metrics, no pipelining, no error handling beyond closing): the kind of ~100-line
raw asyncio protocol proxy the issue cites as the floor for this design. ``bench.proxy`` runs it
beside the gateway so the gateway's cost is read against what the same interpreter, event loop
and parser cost on this machine in the same run. Not a product: a measuring stick.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import uvloop
from httptools import HttpRequestParser, HttpResponseParser


class Upstream(asyncio.Protocol):
    """The upstream side: parses responses only to find where each one ends."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.client.transport.write(data)  # bytes go through as they are
        self.parser.feed_data(data)

    def on_message_complete(self) -> None:
        self.client.response_done()

    def connection_lost(self, exc: Exception | None) -> None:
        self.client.transport.close()


class Client(asyncio.Protocol):
    """The client side: parses requests to find their ends, forwards their bytes upstream."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.parser = HttpRequestParser(self)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.upstream: Upstream | None = None
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        asyncio.get_running_loop().create_task(self._dial())

    async def _dial(self) -> None:
        loop = asyncio.get_running_loop()
        _, upstream = await loop.create_connection(
            lambda: Upstream(self), "127.0.0.1", self.upstream_port
        )
        self.upstream = upstream
        if self.pending and upstream.transport is not None:
            upstream.transport.writelines(self.pending)
            self.pending = []

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(data)
        else:
            self.pending.append(data)

    def on_headers_complete(self) -> None:
        # The floor still looks at the request as a router would: method and URL.
        self.parser.get_method()

    def response_done(self) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def serve(listen_port: int, upstream_port: int) -> None:
    """Serve until killed."""
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", listen_port))
    sock.listen(1024)
    server = await loop.create_server(lambda: Client(upstream_port), sock=sock)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(serve(int(sys.argv[1]), int(sys.argv[2])))
