"""Transparent capture helpers: the original destination of a REDIRECTed connection."""

from __future__ import annotations

import socket
import struct

SO_ORIGINAL_DST = 80
SOL_IPV6 = 41
IP6T_SO_ORIGINAL_DST = 80


def original_destination(sock: socket.socket) -> tuple[str, int] | None:
    """SO_ORIGINAL_DST of a redirected IPv4/IPv6 connection, or None when it was not redirected."""
    try:
        if sock.family == socket.AF_INET:
            raw = sock.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port, packed = struct.unpack_from("!2xH4s", raw)
            return socket.inet_ntop(socket.AF_INET, packed), port
        raw = sock.getsockopt(SOL_IPV6, IP6T_SO_ORIGINAL_DST, 28)
        port, packed = struct.unpack_from("!2xH4x16s", raw)
        return socket.inet_ntop(socket.AF_INET6, packed), port
    except OSError:
        return None


def local_destination(sock: socket.socket) -> tuple[str, int]:
    """Where the connection arrived: the original destination if redirected, else sockname."""
    original = original_destination(sock)
    if original is not None:
        return original
    host, port = sock.getsockname()[:2]
    return str(host), int(port)
