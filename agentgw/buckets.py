"""Per-minute budgets as token buckets shared by the workers: the LLMBackend's client keys
(requests and tokens per minute) and the MCPBackend's callers (tool calls per minute).

A request is admitted while both of its key's buckets hold at least one unit; its tokens (input
plus output, from the provider's usage) are charged once the answer is complete, so a bucket may
go below zero and the key waits until it refills. A refused request learns when to retry.

Where the buckets live: :class:`LocalTable` (a dict) until the process attaches to a
:class:`SharedTable`, fixed slots in a file every serving process maps (:mod:`agentgw.mapped`),
so ``--workers N`` share one budget. The admin process makes the
file before the workers start and names it in ``AMBIENT_LLM_BUDGETS`` (the workers inherit the
environment); each serving process attaches when it starts. ``time.monotonic`` is the system's
``CLOCK_MONOTONIC``, the same in every process.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from agentgw.mapped import MappedFile

ENV_VAR = "AMBIENT_LLM_BUDGETS"
SLOTS = 8192  # distinct (key, unit, limit) buckets; a full table admits (and logs nothing)
_SLOT = struct.Struct("<16sdd")  # key digest, level, stamp


class Table(Protocol):
    """Bucket levels by bucket key, read and written under ``locked()``."""

    def locked(self) -> contextlib.AbstractContextManager[None]: ...

    def get(self, key: bytes) -> tuple[float, float] | None: ...

    def put(self, key: bytes, level: float, stamp: float) -> None: ...


@dataclass(slots=True)
class LocalTable:
    """This process's buckets."""

    values: dict[bytes, tuple[float, float]] = field(default_factory=dict)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def get(self, key: bytes) -> tuple[float, float] | None:
        return self.values.get(key)

    def put(self, key: bytes, level: float, stamp: float) -> None:
        self.values[key] = (level, stamp)


class SharedTable:
    """Buckets in a file every serving process maps: open addressing over ``SLOTS`` slots."""

    SIZE = SLOTS * _SLOT.size

    def __init__(self, path: str) -> None:
        self.file = MappedFile(path, self.SIZE)
        self.map = self.file.map

    @classmethod
    def create(cls, path: str) -> None:
        """A new, empty table at ``path``."""
        MappedFile.create(path, cls.SIZE)

    def locked(self) -> contextlib.AbstractContextManager[None]:
        return self.file.locked()

    def _slot(self, key: bytes) -> tuple[int, bool]:
        start = int.from_bytes(key[:4], "little") % SLOTS
        for probe in range(SLOTS):
            at = ((start + probe) % SLOTS) * _SLOT.size
            digest = self.map[at : at + 16]
            if digest == key:
                return at, True
            if digest == bytes(16):
                return at, False
        return -1, False

    def get(self, key: bytes) -> tuple[float, float] | None:
        at, found = self._slot(key)
        if not found:
            return None
        _, level, stamp = _SLOT.unpack_from(self.map, at)
        return level, stamp

    def put(self, key: bytes, level: float, stamp: float) -> None:
        at, _ = self._slot(key)
        if at >= 0:
            _SLOT.pack_into(self.map, at, key, level, stamp)

    def close(self) -> None:
        self.file.close()


@dataclass(slots=True)
class Budgets:
    """Every key's buckets, by key identity, unit and limit."""

    clock: Callable[[], float] = time.monotonic
    table: Table = field(default_factory=LocalTable)

    def attach(self, path: str | None) -> None:
        """Share the buckets of the table at ``path`` (None: keep this process's own)."""
        if path and os.path.exists(path):
            self.table = SharedTable(path)

    def detach(self) -> None:
        """Back to this process's own buckets (the process stops serving)."""
        if isinstance(self.table, SharedTable):
            self.table.close()
            self.table = LocalTable()

    def _level(self, key: bytes, per_minute: int, now: float) -> float:
        """The bucket's level refilled to ``now`` (a new bucket is full)."""
        found = self.table.get(key)
        if found is None:
            return float(per_minute)
        level, stamp = found
        if now > stamp:
            level = min(float(per_minute), level + (now - stamp) * per_minute / 60.0)
        return level

    def admit(self, key: str, requests: int | None, tokens: int | None) -> float:
        """0 and a request counted, or the seconds to wait before ``key`` may ask again."""
        limits = [(unit, n) for unit, n in (("requests", requests), ("tokens", tokens)) if n]
        with self.table.locked():
            now = self.clock()
            levels = [(_key(key, u, n), n, self._level(_key(key, u, n), n, now)) for u, n in limits]
            wait = max(((1 - lv) * 60.0 / n for _, n, lv in levels if lv < 1), default=0.0)
            for (unit, _), (bucket, _, level) in zip(limits, levels, strict=True):
                spent = 1 if wait == 0.0 and unit == "requests" else 0
                self.table.put(bucket, level - spent, now)
        return wait

    def charge(self, key: str, tokens_per_minute: int | None, tokens: int) -> None:
        """Take ``tokens`` from ``key``'s token bucket (when it has one)."""
        if tokens_per_minute is None or tokens <= 0:
            return
        bucket = _key(key, "tokens", tokens_per_minute)
        with self.table.locked():
            now = self.clock()
            self.table.put(bucket, self._level(bucket, tokens_per_minute, now) - tokens, now)


def _key(key: str, unit: str, per_minute: int) -> bytes:
    return hashlib.blake2b(f"{key}/{unit}/{per_minute}".encode(), digest_size=16).digest()
