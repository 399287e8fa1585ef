"""A tiny HTTP/1.1 server for the admin ports (config_dump, metrics, readiness)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

from mesh.ztunnel.listen import bind

log = logging.getLogger(__name__)

Response = tuple[int, bytes, str]
Handler = Callable[[Mapping[str, str]], Response]
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}
MAX_HEAD = 16 * 1024


class AdminServer:
    """Serves GET routes on one address; every response closes the connection."""

    def __init__(self, routes: Mapping[str, Handler]) -> None:
        self.routes = dict(routes)
        self.server: asyncio.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port."""
        self.server = await asyncio.start_server(self._serve, sock=bind(host, port))
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        lines = head[:MAX_HEAD].decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.split(" ", 1)[0].split("?", 1)[0]
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        handler = self.routes.get(path)
        if method != "GET":
            status, body, ctype = 405, b"method not allowed\n", "text/plain"
        elif handler is None:
            status, body, ctype = 404, b"not found\n", "text/plain"
        else:
            try:
                status, body, ctype = handler(headers)
            except Exception:
                log.exception("admin handler for %s failed", path)
                status, body, ctype = 500, b"internal error\n", "text/plain"
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )
        with contextlib.suppress(OSError):
            await writer.drain()
        writer.close()

    def close(self) -> None:
        """Stop listening."""
        if self.server:
            self.server.close()
