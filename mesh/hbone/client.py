"""Dial an HBONE connection: TCP, TLS 1.3 with the source SVID, server SPIFFE id check, HTTP/2."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Iterable

from mesh.errors import HboneError, IdentityError
from mesh.hbone.tls import check_server_identity, peer_identity
from mesh.hbone.transport import H2Transport
from mesh.identity.spiffe import SpiffeId

CONNECT_TIMEOUT = 10.0


async def dial(
    host: str,
    port: int,
    context: ssl.SSLContext,
    expected: Iterable[SpiffeId],
    ping_interval: float = 10.0,
    timeout: float = CONNECT_TIMEOUT,
) -> H2Transport:
    """Open a verified HBONE connection; raises HboneError or IdentityError."""
    loop = asyncio.get_running_loop()
    transport = H2Transport(client_side=True, ping_interval=ping_interval)
    try:
        await asyncio.wait_for(
            loop.create_connection(lambda: transport, host, port, ssl=context, server_hostname=""),
            timeout,
        )
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        raise HboneError(f"HBONE connect to {host}:{port} failed: {exc!r}") from exc
    sock = transport.get_extra_info("socket")
    if isinstance(sock, socket.socket):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        ssl_object = transport.get_extra_info("ssl_object")
        assert ssl_object is None or isinstance(ssl_object, ssl.SSLObject | ssl.SSLSocket)
        check_server_identity(peer_identity(ssl_object), expected)
    except IdentityError:
        transport.close()
        raise
    except ValueError as exc:  # the server's alert (e.g. unknown_ca) already ended the session
        transport.close()
        raise HboneError(f"HBONE connect to {host}:{port} refused by the server: {exc}") from exc
    await transport.start()
    return transport
