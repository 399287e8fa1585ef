"""A minimal HTTP/1.1 CONNECT proxy: nghttpx's backend in secure-proxy mode."""

from __future__ import annotations

import asyncio
import contextlib


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        method, target, _ = head.split(b"\r\n", 1)[0].decode().split(" ", 2)
        host, _, port = target.rpartition(":")
        if method != "CONNECT":
            raise ValueError(method)
        up_reader, up_writer = await asyncio.open_connection(host.strip("[]"), int(port))
    except (ValueError, OSError, asyncio.IncompleteReadError):
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")
        writer.close()
        return
    writer.write(b"HTTP/1.1 200 OK\r\n\r\n")
    await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
    for w in (writer, up_writer):
        with contextlib.suppress(Exception):
            w.close()


async def start_connect_proxy(host: str = "127.0.0.1") -> tuple[asyncio.Server, int]:
    """Start the proxy on a free port."""
    server = await asyncio.start_server(_serve, host, 0)
    return server, int(server.sockets[0].getsockname()[1])
