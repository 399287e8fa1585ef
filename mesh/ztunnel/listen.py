"""Listening sockets bound by hand.

``asyncio.start_server(host=...)`` on uvloop resolves the host through libuv's thread pool, which
starts four worker threads (and their malloc arenas) that the ztunnel never needs again; binding
the socket here and passing ``sock=`` keeps the process single-threaded.
"""

from __future__ import annotations

import socket

from ports import bind_listener


def bind(host: str, port: int, backlog: int = 1024) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 = any free port); PortInUse if taken."""
    return bind_listener(host, port, backlog)
