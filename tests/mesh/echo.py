"""A tiny TCP echo server for mesh tests: echoes until the client half-closes, then closes."""

from __future__ import annotations

import asyncio
import contextlib


class Echo:
    """Echo server bound to one address; counts connections."""

    def __init__(self) -> None:
        self.server: asyncio.Server | None = None
        self.connections = 0

    async def start(self, host: str, port: int = 0) -> int:
        """Listen and return the bound port."""
        self.server = await asyncio.start_server(self._serve, host, port)
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while data := await reader.read(262144):
                writer.write(data)
                await writer.drain()
            writer.write_eof()
            await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def close(self) -> None:
        """Stop listening."""
        if self.server:
            self.server.close()
