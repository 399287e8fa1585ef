"""Copy bytes between a TCP socket and an HBONE tunnel; directions are independent (half-close)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from mesh.errors import HboneError
from mesh.hbone.transport import TunnelStream

log = logging.getLogger(__name__)

# StreamReader limit for proxied sockets: bigger reads mean fewer, larger HTTP/2 frames in bulk.
SOCKET_BUFFER = 1024 * 1024


@dataclass(slots=True)
class ByteCounts:
    """Bytes moved: ``to_tunnel`` from the socket into the tunnel, ``from_tunnel`` the other way."""

    to_tunnel: int = 0
    from_tunnel: int = 0


def _chunk_size(total: int) -> int:
    """Read size grows with the bytes moved so far, like ztunnel's copy buffers."""
    if total < 128 * 1024:
        return 16 * 1024
    if total < 10 * 1024 * 1024:
        return 64 * 1024
    return SOCKET_BUFFER


async def splice(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    stream: TunnelStream,
    counts: ByteCounts | None = None,
) -> ByteCounts:
    """Run both copy directions until both have finished; aborts the tunnel on errors."""
    counts = counts or ByteCounts()

    async def socket_to_tunnel() -> None:
        while True:
            data = await reader.read(_chunk_size(counts.to_tunnel))
            if not data:
                stream.end()
                return
            counts.to_tunnel += len(data)
            await stream.write(data)

    async def tunnel_to_socket() -> None:
        while True:
            data = await stream.read()
            if not data:
                if writer.can_write_eof():
                    writer.write_eof()
                return
            counts.from_tunnel += len(data)
            writer.write(data)
            await writer.drain()

    # One extra task, the other direction runs in the caller's: tasks dominate per-connection
    # memory. A failing upload aborts the stream, which ends the download loop too.
    upload = asyncio.ensure_future(socket_to_tunnel())
    upload.add_done_callback(
        lambda t: stream.abort() if not t.cancelled() and t.exception() is not None else None
    )
    try:
        await tunnel_to_socket()
        await upload
    except (HboneError, ConnectionError, OSError) as exc:
        log.debug("tunnel %d ended with error: %s", stream.stream_id, exc)
        stream.abort()
    finally:
        if not upload.done():
            upload.cancel()
        await asyncio.gather(upload, return_exceptions=True)
        with contextlib.suppress(Exception):
            writer.close()
        stream.transport.release(stream)
    return counts
