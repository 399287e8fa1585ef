"""Serve the admin app with uvicorn in the caller's event loop, leaving signals to the caller."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Generator

import uvicorn
from starlette.applications import Starlette

from ports import bind_listener

log = logging.getLogger(__name__)


class _Server(uvicorn.Server):
    """A uvicorn server that never installs signal handlers: the gateway owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


class AdminServer:
    """A running admin server; ``port`` is the bound port (useful when asked for port 0)."""

    def __init__(
        self, server: uvicorn.Server, task: asyncio.Task[None], sock: socket.socket
    ) -> None:
        self._server = server
        self._task = task
        self._sock = sock
        self.host, self.port = sock.getsockname()[:2]

    async def close(self) -> None:
        """Stop accepting, finish in-flight admin requests, and release the socket."""
        self._server.should_exit = True
        try:
            await self._task
        finally:
            self._sock.close()


async def serve_admin(app: Starlette, host: str, port: int) -> AdminServer:
    """Bind ``host:port`` now (raising PortInUse if taken) and serve ``app`` on the running loop."""
    sock = bind_listener(host, port, 128, setting=f"--admin {host}:{port}")
    config = uvicorn.Config(
        app, lifespan="off", access_log=False, log_level="warning", log_config=None
    )
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="admin-server")
    while not server.started:
        if task.done():
            sock.close()
            task.result()
            raise RuntimeError("admin server stopped while starting")
        await asyncio.sleep(0.005)
    log.info("admin API listening on %s:%d", *sock.getsockname()[:2])
    return AdminServer(server, task, sock)
