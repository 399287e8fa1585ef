"""Tool calls an LLM answer asked for, kept so the MCP call that carries one out links back to it.

When an answer that passed through an LLMBackend asks for tool calls, each is remembered for
``ttl`` seconds under (caller, tool name, arguments) with its tool-call id and the traceparent of
the request whose answer asked for it. When the same caller then calls that tool through an
MCPBackend with the same arguments, the MCP request's span links to that span and carries the
call's ``gen_ai.tool.call.id``.

The caller is the ``x-agent-id`` header when the request has one, else a digest of the
credential it presented (``Authorization`` or ``x-api-key``): the same agent presenting the same
key or token to both endpoints is the same caller; else the SPIFFE id of the mesh peer the
request came from (waypoint mode). A request with none of them is nobody's, and its tool calls
are not kept. Arguments compare as JSON with sorted keys (an agent re-serialises
them); a string that is not JSON compares as written. The ledger is bounded and shared by the
serving processes (``--workers N``): a worker's LLM answer links another worker's tool call.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from agentgw.mapped import LocalMemory, MappedFile, Memory
from mesh.identity.spiffe import SpiffeId

CALLER_HEADER = "x-agent-id"


def caller_of(headers: Mapping[str, str], peer: SpiffeId | None = None) -> str | None:
    """Who is calling: ``agent:<x-agent-id>``, ``key:<digest of the credential>``,
    ``peer:<SPIFFE id>``, or None."""
    agent = headers.get(CALLER_HEADER)
    if agent:
        return f"agent:{agent.strip()}"
    credential = headers.get("authorization") or headers.get("x-api-key")
    if not credential:
        return f"peer:{peer.uri}" if peer is not None else None
    token = credential.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    return "key:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def canonical(arguments: Any) -> str:
    """Arguments as compared: JSON with sorted keys (a JSON string is parsed first)."""
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments) if arguments.strip() else {}
        except orjson.JSONDecodeError:
            return arguments
    if arguments is None:
        arguments = {}
    return orjson.dumps(arguments, option=orjson.OPT_SORT_KEYS).decode()


@dataclass(frozen=True, slots=True)
class AskedCall:
    """A tool call an answer asked for, and the request whose span asked."""

    call_id: str
    traceparent: str


ENV_VAR = "AMBIENT_TOOL_CALLS"  # the shared ledger's file, made by the admin process
# key digest, expiry (CLOCK_MONOTONIC, the same in every process), id length, id, traceparent
_SLOT = struct.Struct("<16sdB96s55s")
_EMPTY = bytes(16)


class ToolCallLedger:
    """Remembered tool calls, claimed once each by the MCP call that carries them out.

    ``capacity`` slots in sets of ``ways``: a call's (caller, tool, arguments) digest picks its
    set, so remembering and claiming look at ``ways`` slots, never the whole ledger; a full set
    drops the call closest to expiry. The slots are this process's own until :meth:`attach`
    maps the file every serving process shares (:mod:`agentgw.mapped`), so an answer one worker
    relayed links the tool call another worker serves. A tool-call id longer than 96 bytes is
    not kept (providers' ids are 24-40).
    """

    def __init__(
        self, ttl: float = 600.0, capacity: int = 8192, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl, self.clock = ttl, clock
        self.ways = min(8, capacity)
        self.sets = max(1, capacity // self.ways)
        self.memory: Memory = LocalMemory(self.size)

    @property
    def size(self) -> int:
        """Bytes of the slots."""
        return self.sets * self.ways * _SLOT.size

    def create(self, path: str) -> None:
        """A new, empty shared ledger at ``path``."""
        MappedFile.create(path, self.size)

    def attach(self, path: str | None) -> None:
        """Share the ledger in the file at ``path`` (None or absent: keep this process's own)."""
        if path and os.path.exists(path):
            self.memory = MappedFile(path, self.size)

    def detach(self) -> None:
        """Back to a ledger of this process's own (the process stops serving)."""
        self.memory.close()
        self.memory = LocalMemory(self.size)

    def _set(self, digest: bytes) -> range:
        first = int.from_bytes(digest[:4], "little") % self.sets * self.ways
        return range(first * _SLOT.size, (first + self.ways) * _SLOT.size, _SLOT.size)

    def remember(
        self, caller: str, name: str, arguments: Any, call_id: str, traceparent: str
    ) -> None:
        raw_id, raw_parent = call_id.encode(), traceparent.encode()
        if len(raw_id) > 96 or len(raw_parent) != 55:
            return
        digest = _digest(caller, name, arguments)
        with self.memory.locked():
            now, table = self.clock(), self.memory.map
            # A free or expired slot, else the one closest to expiry.
            at = min(self._set(digest), key=lambda at: _expiry(table, at, now))
            _SLOT.pack_into(table, at, digest, now + self.ttl, len(raw_id), raw_id, raw_parent)

    def claim(self, caller: str, name: str, arguments: Any) -> AskedCall | None:
        """The oldest call still remembered for exactly this tool and arguments, forgotten."""
        digest = _digest(caller, name, arguments)
        with self.memory.locked():
            now, table = self.clock(), self.memory.map
            mine = [at for at in self._set(digest) if table[at : at + 16] == digest]
            live = [at for at in mine if _expiry(table, at, now) > 0]
            for at in mine:
                if at not in live:
                    table[at : at + 16] = _EMPTY  # expired: free the slot
            if not live:
                return None
            at = min(live, key=lambda at: _expiry(table, at, now))
            _, _, length, raw_id, raw_parent = _SLOT.unpack_from(table, at)
            table[at : at + 16] = _EMPTY
        return AskedCall(raw_id[:length].decode(), raw_parent.decode())

    def __len__(self) -> int:
        """Calls remembered and not expired."""
        with self.memory.locked():
            now, table = self.clock(), self.memory.map
            slots = range(0, self.sets * self.ways * _SLOT.size, _SLOT.size)
            return sum(1 for at in slots if _expiry(table, at, now) > 0)


def _expiry(table: bytearray | mmap.mmap, at: int, now: float) -> float:
    """0 for a free or expired slot, else its expiry."""
    if table[at : at + 16] == _EMPTY:
        return 0.0
    expires: float = _SLOT.unpack_from(table, at)[1]
    return expires if expires >= now else 0.0


def _digest(caller: str, name: str, arguments: Any) -> bytes:
    key = "\0".join((caller, name, canonical(arguments)))
    return hashlib.blake2b(key.encode(), digest_size=16).digest()
