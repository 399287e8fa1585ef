"""A file every serving process of one gateway maps (``mmap``) and updates under an exclusive
``flock``: how ``--workers N`` share small fixed-size tables (:mod:`agentgw.buckets`,
:mod:`agentgw.toolcalls`). The admin process makes each file before the workers start and names
it in an environment variable the workers inherit; a process that finds no file keeps a table
of its own (:class:`LocalMemory`).
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
from collections.abc import Iterator


class LocalMemory:
    """This process's own bytes: no lock needed."""

    def __init__(self, size: int) -> None:
        self.map = bytearray(size)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def close(self) -> None:
        pass


class MappedFile:
    """``size`` bytes of the file at ``path``, shared with every process that maps it."""

    def __init__(self, path: str, size: int) -> None:
        self.fd = os.open(path, os.O_RDWR)
        self.map = mmap.mmap(self.fd, size)

    @staticmethod
    def create(path: str, size: int) -> None:
        """A new file of ``size`` zero bytes at ``path``."""
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, size)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        self.map.close()
        os.close(self.fd)


Memory = LocalMemory | MappedFile
