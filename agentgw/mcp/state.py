"""Process state of every MCPBackend app: the upstream client and what sessions left behind.

Sessions live in their ids (:mod:`agentgw.mcp.sealing`); this holds only what one process
learns on the way and may forget: upstream sessions initialised again after they expired (so a
resumed session re-initialises once per process, not per request) and sessions ended by DELETE
here (a later request with the id is 404). Both are bounded; the oldest entries go first. The
replay buffers of session clients' streams (:mod:`agentgw.mcp.streams`) are of this process too.
"""

from __future__ import annotations

import hashlib
import itertools
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agentgw.buckets import Budgets
from agentgw.http1 import Http1Pool
from agentgw.mcp.channel import Channels
from agentgw.mcp.metrics import McpMetrics
from agentgw.mcp.mrtr import ParkedCalls
from agentgw.mcp.streams import Replays
from agentgw.toolcalls import ToolCallLedger

if TYPE_CHECKING:
    from agentgw.mcp.legacy import LegacyStream

_KEPT = 65_536


def _bounded_put(table: dict[str, str], key: str, value: str) -> None:
    table.pop(key, None)
    table[key] = value
    if len(table) > _KEPT:
        del table[next(iter(table))]


@dataclass(slots=True)
class McpState:
    """Upstream connections, upstream session replacements, ended sessions, request ids,
    metrics, tool-call budgets."""

    client: Http1Pool | None = None
    replaced: dict[str, str] = field(default_factory=dict)  # "backend/target/old" -> new
    ended: dict[str, str] = field(default_factory=dict)  # digest of a session id -> ""
    ids: itertools.count[int] = field(default_factory=itertools.count)
    metrics: McpMetrics = field(default_factory=McpMetrics)
    # Tool calls LLM answers asked for, shared with the LLMBackends (agentgw.toolcalls).
    tool_calls: ToolCallLedger = field(default_factory=ToolCallLedger)
    channels: Channels = field(default_factory=Channels)  # stdio children, legacy SSE streams
    legacy: dict[str, LegacyStream] = field(default_factory=dict)  # legacy clients' streams
    # Tool calls per minute per caller: the LLM keys' buckets, shared by the workers once the
    # process attached to the admin's table (agentgw.buckets).
    buckets: Budgets = field(default_factory=Budgets)
    # Upstream sessions are shared by replicas: their own requests' ids must not collide.
    id_prefix: str = field(default_factory=lambda: os.urandom(4).hex())
    replays: Replays = field(init=False)  # session clients' resumable streams
    parked: ParkedCalls = field(default_factory=ParkedCalls)  # stateless calls between rounds

    def __post_init__(self) -> None:
        self.replays = Replays(self.id_prefix)

    def http(self) -> Http1Pool:
        """The connections upstream calls go through (made on first use)."""
        if self.client is None:
            self.client = Http1Pool()
        return self.client

    async def start(self) -> None:
        self.http()

    async def stop(self) -> None:
        await self.replays.stop()
        await self.parked.stop()
        await self.channels.stop()
        if self.client is not None:
            client, self.client = self.client, None
            await client.close()

    def next_id(self) -> str:
        """An id for a request the gateway itself sends upstream."""
        return f"ambient-{self.id_prefix}-{next(self.ids)}"

    def upstream_session(self, key: str, session: str | None) -> str | None:
        """The upstream session now standing for ``session`` (``key``: backend/target)."""
        if session is None:
            return None
        return self.replaced.get(f"{key}/{session}", session)

    def replace(self, key: str, old: str, new: str) -> None:
        """An upstream session was initialised again: ``new`` stands for ``old`` from now."""
        _bounded_put(self.replaced, f"{key}/{old}", new)

    def end(self, session_id: str) -> None:
        """The client ended the session (DELETE)."""
        _bounded_put(self.ended, _digest(session_id), "")

    def is_ended(self, session_id: str) -> bool:
        return _digest(session_id) in self.ended


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]
