"""MCP 2026-07-28, the stateless era: no session, every request self-describing.

A request whose ``MCP-Protocol-Version`` is 2026-07-28 carries ``Mcp-Method`` (and ``Mcp-Name``
where the method names something, checked by :mod:`agentgw.mcp.headers`) and the same version in
``params._meta``. Methods that era removed are 404 with -32601; results say ``resultType:
complete`` and carry the server's info; list results may not be cached by others (``ttlMs: 0``,
``cacheScope: private``: they are filtered per caller). Behind the gateway the targets still
speak sessions: stateless clients share one federated session per MCPBackend and process; what
an upstream asks a client on the way becomes MRTR rounds (:mod:`agentgw.mcp.mrtr`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agentgw.mcp.headers import NAMED
from agentgw.mcp.jsonrpc import (
    HEADER_MISMATCH,
    INTERNAL_ERROR,
    INVALID_PARAMS,
    INVALID_REQUEST,
    METHOD_NOT_FOUND,
    Kind,
    Message,
    RpcError,
    classify,
)
from agentgw.mcp.streams import Sink

VERSION = "2026-07-28"
META_VERSION = "io.modelcontextprotocol/protocolVersion"
META_SERVER = "io.modelcontextprotocol/serverInfo"
META_CAPABILITIES = "io.modelcontextprotocol/clientCapabilities"
META_LOG_LEVEL = "io.modelcontextprotocol/logLevel"
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")
_RETRY_FIELDS = frozenset({"requestState", "inputResponses"})  # MRTR (agentgw.mcp.mrtr)
UNSUPPORTED_VERSION = -32022
REMOVED = frozenset(
    {"initialize", "ping", "logging/setLevel", "resources/subscribe", "resources/unsubscribe"}
)
# What the shared upstream session is opened with: the oldest era's client, asking nothing.
SHARED_CLIENT = {
    "protocolVersion": "2025-06-18",
    # Upstreams may ask: the gateway asks the client in MRTR rounds (agentgw.mcp.mrtr), or
    # answers -32601 itself when the client did not declare the capability.
    "capabilities": {"sampling": {}, "elicitation": {}, "roots": {"listChanged": False}},
    "clientInfo": {"name": "ambient-gateway (stateless clients)", "version": "1"},
}


def is_modern(headers: Mapping[str, str]) -> bool:
    """True when the request is of the stateless era."""
    return headers.get("mcp-protocol-version") == VERSION


def check(headers: Mapping[str, str], message: Message) -> None:
    """RpcError unless ``message`` is a well-formed stateless request."""
    if message.kind is Kind.RESPONSE:
        raise RpcError(INVALID_REQUEST, "clients of 2026-07-28 do not POST responses")
    if "mcp-method" not in headers:
        raise RpcError(HEADER_MISMATCH, "the Mcp-Method header is required", id=message.id)
    if message.method in NAMED and "mcp-name" not in headers:
        raise RpcError(HEADER_MISMATCH, "the Mcp-Name header is required", id=message.id)
    meta = message.params.get("_meta")
    version = meta.get(META_VERSION) if isinstance(meta, dict) else None
    if version is None:
        raise RpcError(INVALID_PARAMS, f"params._meta[{META_VERSION!r}] is required", id=message.id)
    if version != VERSION:
        raise RpcError(
            HEADER_MISMATCH,
            f"MCP-Protocol-Version {VERSION} does not match params._meta {version!r}",
            id=message.id,
        )
    if message.method in REMOVED:
        raise RpcError(
            METHOD_NOT_FOUND, f"Method not found: {message.method} (removed in {VERSION})", 404
        )


def capabilities(message: Message) -> dict[str, Any]:
    """The client capabilities a stateless request declares in ``_meta``."""
    meta = message.params.get("_meta")
    declared = meta.get(META_CAPABILITIES) if isinstance(meta, dict) else None
    return declared if isinstance(declared, dict) else {}


def log_level(message: Message) -> int | None:
    """The least severe log level (an index in :data:`LOG_LEVELS`) a stateless request opted in
    to with ``_meta`` logLevel; None: it asked for no log messages."""
    meta = message.params.get("_meta")
    level = meta.get(META_LOG_LEVEL) if isinstance(meta, dict) else None
    return LOG_LEVELS.index(level) if level in LOG_LEVELS else None


@dataclass(slots=True)
class LogFilter:
    """A sink that passes an upstream's log messages on only at or above ``level`` (None:
    none): the upstream session is shared, so its log level is not the client's."""

    sink: Sink
    level: int | None

    async def put(self, item: Any) -> None:
        if isinstance(item, dict) and item.get("method") == "notifications/message":
            params = item.get("params")
            level = params.get("level") if isinstance(params, dict) else None
            if self.level is None or level not in LOG_LEVELS:
                return
            if LOG_LEVELS.index(level) < self.level:
                return
        await self.sink.put(item)


def strip(message: Message) -> Message:
    """``message`` without the era's ``_meta`` keys and MRTR retry fields (the targets speak
    the session era)."""
    meta = message.params.get("_meta")
    if not isinstance(meta, dict) and not _RETRY_FIELDS & message.params.keys():
        return message
    params = {k: v for k, v in message.params.items() if k != "_meta" and k not in _RETRY_FIELDS}
    if isinstance(meta, dict):
        kept = {k: v for k, v in meta.items() if not k.startswith("io.modelcontextprotocol/")}
        if kept:
            params["_meta"] = kept
    return classify({**message.raw, "params": params})


def complete(answer: dict[str, Any], request_id: Any, server: dict[str, Any]) -> dict[str, Any]:
    """The final answer to ``request_id`` as a stateless client expects it."""
    result = answer.get("result")
    if answer.get("id") != request_id or not isinstance(result, dict):
        return answer
    meta = {**(result.get("_meta") or {}), META_SERVER: server}
    return {**answer, "result": {"resultType": "complete", **result, "_meta": meta}}


UPSTREAM_FAILED = 503  # a target unreachable, timed out or answering garbage
# A refused well-formed request's status by its JSON-RPC code (session clients get 200).
_STATUS = {METHOD_NOT_FOUND: 404, INVALID_PARAMS: 400, INTERNAL_ERROR: UPSTREAM_FAILED}


def status_of(error: RpcError) -> int:
    """The HTTP status of ``error`` for a stateless client: what the transport rules chose, else
    404 for an unknown method, 400 for unknown or denied names and bad params, 503 for a failed
    target (the gateway's own -32603 errors are all of failed targets)."""
    if error.status != 200:
        return error.status
    return _STATUS.get(error.code, 400)


def uncacheable(result: dict[str, Any]) -> dict[str, Any]:
    """A list result that shared caches must not keep."""
    return {**result, "ttlMs": 0, "cacheScope": "private"}


def discover(merged: dict[str, Any], supported: tuple[str, ...]) -> dict[str, Any]:
    """The ``server/discover`` result from the shared session's merged InitializeResult; the
    server's info is the ``_meta`` stamp every result of the era carries (where clients read it)."""
    result = {
        "resultType": "complete",
        "supportedVersions": [VERSION, *supported],
        "capabilities": _stateless_capabilities(merged.get("capabilities", {})),
        "ttlMs": 0,
        "cacheScope": "private",
        "_meta": {META_SERVER: merged.get("serverInfo", {})},
    }
    if merged.get("instructions"):
        result["instructions"] = merged["instructions"]
    return result


# What a 2026-07-28 server delivers only on subscriptions/listen streams, by capability.
_LISTEN_ONLY: dict[str, tuple[str, ...]] = {
    "tools": ("listChanged",),
    "prompts": ("listChanged",),
    "resources": ("listChanged", "subscribe"),
}


def _stateless_capabilities(capabilities: dict[str, Any]) -> dict[str, Any]:
    """The targets' merged capabilities as stateless clients may count on them: change
    notifications and resource subscriptions come only on ``subscriptions/listen``, which the
    gateway does not serve, so those flags are false."""
    honest = dict(capabilities)
    for key, flags in _LISTEN_ONLY.items():
        if isinstance(honest.get(key), dict):
            honest[key] = {**honest[key], **dict.fromkeys(flags, False)}
    return honest
