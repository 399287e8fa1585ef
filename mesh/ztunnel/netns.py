"""Network namespaces of the node's pods: find the one holding an IP, run code inside one.

``setns(CLONE_NEWNET)`` moves only the calling thread, so everything that enters a pod's
namespace runs in a thread of its own that ends afterwards; what it creates there keeps the
namespace: a socket stays in it after being handed to the event loop, and a process it starts
(``nft``) is born in it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from mesh.errors import MeshError

T = TypeVar("T")

CLONE_NEWNET = 0x40000000
NAMED = Path("/var/run/netns")  # ip netns add; containerd's and CRI-O's cni-* namespaces
PROC = Path("/proc")

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(MeshError):
    """A network namespace could not be entered."""


@dataclass(frozen=True, slots=True)
class Netns:
    """An open handle on a network namespace (the descriptor keeps it from being reused)."""

    fd: int
    inode: int
    path: str

    def close(self) -> None:
        """Let the namespace go."""
        with contextlib.suppress(OSError):
            os.close(self.fd)


def run_in(netns: Netns, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a fresh thread inside ``netns`` and return its result (blocking)."""
    result: list[T] = []
    error: list[BaseException] = []

    def body() -> None:
        try:
            if _libc.setns(netns.fd, CLONE_NEWNET) != 0:
                err = ctypes.get_errno()
                raise NetnsError(f"setns {netns.path}: {os.strerror(err)}")
            result.append(fn())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    thread = threading.Thread(target=body, name="netns", daemon=True)
    thread.start()
    thread.join()
    if error:
        raise error[0]
    return result[0]


def _candidates() -> Iterator[str]:
    """Paths of the node's network namespaces: named ones, then each process's."""
    if NAMED.is_dir():
        for entry in sorted(NAMED.iterdir()):
            yield str(entry)
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            yield str(entry / "ns" / "net")


def _holds(ip: str) -> bool:
    """Whether the current thread's namespace has ``ip`` as a local address: the route to it
    picks it as the source, which no route can do for an address that is not local (unlike a
    bind, which ``ip_nonlocal_bind`` would let through)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((ip, 9))
        except OSError:
            return False
        return str(probe.getsockname()[0]) == ip


def _held(ips: list[str]) -> list[str]:
    return [ip for ip in ips if _holds(ip)]


def find(ips: set[str]) -> dict[str, Netns]:
    """The network namespace holding each of ``ips`` (those found), other than our own: the
    named ones, then each process's (deduplicated by inode), each checked in a thread inside."""
    own = os.stat("/proc/self/ns/net").st_ino
    seen = {own}
    found: dict[str, Netns] = {}
    for path in _candidates():
        if len(found) == len(ips):
            break
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # the process exited, or it is not ours to read
            continue
        inode = os.fstat(fd).st_ino
        if inode in seen:
            os.close(fd)
            continue
        seen.add(inode)
        netns = Netns(fd, inode, path)
        wanted = sorted(ips - found.keys())
        try:
            held = run_in(netns, functools.partial(_held, wanted))
        except NetnsError:
            held = []
        if not held:
            netns.close()
            continue
        # A Pod has a namespace of its own: one holding two wanted IPs is taken for the first.
        found[held[0]] = netns
    return found
