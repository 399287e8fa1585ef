"""``--workers N``: the supervisor binds each listener port once and hands the socket to workers.

Why not SO_REUSEPORT: with it any process of the same user may bind the same port later and the
kernel splits connections between the two silently; a probe bind before it cannot close that
window either (a port taken between probe and bind). So the supervisor binds each port itself,
without SO_REUSEPORT -- a port held by anything else fails there, naming the holder -- and every
worker accepts from that one socket, as nginx's workers do without ``reuseport``: the kernel's
single accept queue feeds whichever worker accepts first. Two more things follow from it: a
worker that dies loses no queued connection (they stay in the shared queue for the others), and
its replacement gets the same socket back.

A worker asks for a port (at start and when a reload adds one) over its own pipe: ``(host, port,
setting)``; the supervisor answers ``("ok",)`` followed by the descriptor (SCM_RIGHTS), or
``("taken", host, port, holder, setting)``. The supervisor keeps its copy while its own snapshot
serves the port, so a reload that drops a port frees it once the workers have closed theirs.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle, send_handle

from gateway.proxy.listeners import LISTEN_BACKLOG, SocketSource, served_ports
from gateway.snapshot import Snapshot
from ports import PortInUse, bind_listener

log = logging.getLogger(__name__)

__all__ = ["SocketBroker", "socket_client"]


class SocketBroker:
    """The supervisor's listening sockets, by (host, port), lent to workers on request."""

    def __init__(self, host: str) -> None:
        self.host = host
        self._sockets: dict[tuple[str, int], socket.socket] = {}

    def bind_snapshot(self, snapshot: Snapshot) -> None:
        """Bind every port ``snapshot`` serves that is not bound yet (PortInUse if one is taken,
        after closing what this call bound); close the ports it no longer serves."""
        served = served_ports(snapshot)
        bound: list[tuple[str, int]] = []
        try:
            for port, setting in sorted(served.items()):
                if (self.host, port) not in self._sockets:
                    self.get(self.host, port, setting)
                    bound.append((self.host, port))
        except PortInUse:
            for key in bound:
                self._sockets.pop(key).close()
            raise
        for key in [key for key in self._sockets if key[1] not in served]:
            self._sockets.pop(key).close()

    def reconcile(self, snapshot: Snapshot) -> None:
        """After a reload: bind the new ports (a taken one is logged), close the dropped ones."""
        try:
            self.bind_snapshot(snapshot)
        except PortInUse as exc:
            log.error("%s; the port is not served", exc)

    def get(self, host: str, port: int, setting: str) -> socket.socket:
        """The socket for ``host:port``, bound now if it is not yet."""
        sock = self._sockets.get((host, port))
        if sock is None:
            sock = self._sockets[(host, port)] = bind_listener(
                host, port, LISTEN_BACKLOG, setting=setting
            )
        return sock

    def serve(self, conn: Connection, pid: int) -> bool:
        """Answer one request from a worker's pipe; False once the worker is gone."""
        try:
            host, port, setting = conn.recv()
        except (EOFError, OSError):
            return False
        try:
            sock = self.get(host, port, setting)
        except PortInUse as exc:
            conn.send(("taken", exc.host, exc.port, exc.holder, exc.setting))
            return True
        try:
            conn.send(("ok",))
            send_handle(conn, sock.fileno(), pid)
        except OSError:
            return False
        return True

    def close(self) -> None:
        """Close the supervisor's copies (the ports are free once the workers closed theirs)."""
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()


def socket_client(conn: Connection) -> SocketSource:
    """A worker's socket source: asks the supervisor over ``conn`` (one request at a time)."""
    lock = threading.Lock()

    def ask(host: str, port: int, setting: str) -> socket.socket:
        with lock:
            conn.send((host, port, setting))
            answer = conn.recv()
            if answer[0] == "taken":
                _, host, port, holder, setting = answer
                raise PortInUse(host, port, holder, setting)
            sock = socket.socket(fileno=recv_handle(conn))
        sock.setblocking(False)
        return sock

    async def get(host: str, port: int, setting: str) -> socket.socket:
        return await asyncio.to_thread(ask, host, port, setting)

    return get
