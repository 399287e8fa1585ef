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
them); a string that is not JSON compares as written. The ledger is per serving process (a
worker's LLM answer and another worker's tool call are not linked) and bounded (``capacity``
entries, the oldest dropped first).
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

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


@dataclass(slots=True)
class ToolCallLedger:
    """Remembered tool calls, claimed once each by the MCP call that carries them out."""

    ttl: float = 600.0
    capacity: int = 10_000
    clock: Callable[[], float] = time.monotonic
    _entries: OrderedDict[tuple[str, str, str], list[tuple[float, AskedCall]]] = field(
        default_factory=OrderedDict
    )
    _count: int = 0

    def remember(
        self, caller: str, name: str, arguments: Any, call_id: str, traceparent: str
    ) -> None:
        key = (caller, name, canonical(arguments))
        calls = self._entries.get(key)
        if calls is None:
            calls = self._entries[key] = []
        calls.append((self.clock() + self.ttl, AskedCall(call_id, traceparent)))
        self._count += 1
        while self._count > self.capacity:
            _, oldest = self._entries.popitem(last=False)
            self._count -= len(oldest)

    def claim(self, caller: str, name: str, arguments: Any) -> AskedCall | None:
        """The oldest call still remembered for exactly this tool and arguments, forgotten."""
        key = (caller, name, canonical(arguments))
        calls = self._entries.get(key)
        now = self.clock()
        while calls:
            expires, asked = calls.pop(0)
            self._count -= 1
            if expires >= now:
                if not calls:
                    del self._entries[key]
                return asked
        self._entries.pop(key, None)
        return None

    def __len__(self) -> int:
        return self._count
