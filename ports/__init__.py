"""Listening sockets that own their port: binding without SO_REUSEPORT, and naming who holds one.

A package of its own, below both the gateway and the mesh: the mesh (ztunnel, CA) binds its
ports here too and imports nothing of the gateway's.

Every command binds its ports here (or checks them here first), so a port some other process
listens on -- another ``ambient gateway`` included -- is an error that names the port, the setting
that chose it and, where ``/proc`` lets us see it, the process that holds it. No socket sets
SO_REUSEPORT: with it, a second process of the same user could bind the same port without a word
and the kernel would split connections between the two. ``--workers N`` shares one socket among
the workers instead (``gateway.workers``).
"""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

__all__ = ["PortInUse", "bind_listener", "holder_pid", "port_holder", "probe"]

# Connections the kernel queues before they are accepted (capped by net.core.somaxconn).
DEFAULT_BACKLOG = 4096
_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp
_COMMAND_CHARS = 160  # of a holder's command line, in messages


class PortInUse(OSError):
    """A port could not be bound because something listens there; says what, and who."""

    def __init__(self, host: str, port: int, holder: str | None, setting: str = "") -> None:
        super().__init__(errno.EADDRINUSE, "address already in use")
        self.host = host
        self.port = port
        self.holder = holder
        # What chose the port: a flag ("--admin 127.0.0.1:15000") or a Gateway listener.
        self.setting = setting

    def __str__(self) -> str:
        setting = f" ({self.setting})" if self.setting else ""
        who = self.holder or "another process"
        return f"port {self.port} on {self.host}{setting} is already in use, held by {who}"


def bind_listener(
    host: str, port: int, backlog: int = DEFAULT_BACKLOG, *, setting: str = ""
) -> socket.socket:
    """A non-blocking listening TCP socket on ``host:port``; :class:`PortInUse` if it is taken.

    SO_REUSEADDR only (a restarted gateway binds past its old connections in TIME_WAIT); proto
    IPPROTO_TCP because asyncio sets TCP_NODELAY only on accepted sockets that say they are TCP.
    """
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port, port_holder(port), setting) from None
        chosen = f" ({setting})" if setting else ""
        message = f"cannot listen on {host}:{port}{chosen}: {exc.strerror}"
        raise OSError(exc.errno, message) from None
    return sock


def probe(host: str, port: int, *, setting: str = "") -> None:
    """Raise :class:`PortInUse` when ``host:port`` cannot be bound right now (for servers that
    bind inside a library, e.g. grpcio, whose own error names nothing)."""
    bind_listener(host, port, backlog=1, setting=setting).close()


def port_holder(port: int) -> str | None:
    """``pid N (command line)`` of a process listening on TCP ``port``, as far as ``/proc``
    shows it (other users' file descriptors are not readable: then None)."""
    pid = holder_pid(port)
    return None if pid is None else f"pid {pid} ({_command(pid)})"


def holder_pid(port: int) -> int | None:
    """The lowest pid of the processes listening on TCP ``port`` that ``/proc`` lets us see
    (with ``--workers N`` the supervisor, whose workers share its socket)."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    targets = {f"socket:[{inode}]" for inode in inodes}
    for pid in sorted(int(entry.name) for entry in os.scandir("/proc") if entry.name.isdigit()):
        try:
            fds = os.scandir(f"/proc/{pid}/fd")
        except OSError:
            continue
        with fds:
            for fd in fds:
                try:
                    if os.readlink(fd.path) in targets:
                        return pid
                except OSError:
                    continue
    return None


def _listening_inodes(port: int) -> set[str]:
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            listening = len(fields) > 9 and fields[3] == _LISTEN
            if listening and int(fields[1].rsplit(":", 1)[1], 16) == port:
                found.add(fields[9])
    return found


def _command(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return "?"
    command = " ".join(raw.replace(b"\0", b" ").decode(errors="replace").split())
    return command if len(command) <= _COMMAND_CHARS else command[: _COMMAND_CHARS - 3] + "..."
