"""The ``Mcp-Method`` and ``Mcp-Name`` headers checked against the body (MCP 2026-07-28).

Intermediaries that read the body must refuse a request whose headers say something else
(400, JSON-RPC -32020), whatever protocol version it claims: a policy enforced on the headers
must not be smuggled past by a different body. ``Mcp-Name`` may be sent as ``=?base64?…?=``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from agentgw.mcp.jsonrpc import HEADER_MISMATCH, Message, RpcError

# Methods whose Mcp-Name is a param: the param's name.
NAMED = {"tools/call": "name", "prompts/get": "name", "resources/read": "uri"}


def decode_value(value: str) -> str:
    """A header value, the ``=?base64?…?=`` form decoded; RpcError if it does not decode."""
    if value.startswith("=?base64?") and value.endswith("?="):
        try:
            return base64.b64decode(value[9:-2], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise RpcError(HEADER_MISMATCH, f"Mcp-Name: bad base64 form: {exc}") from exc
    return value


def check(headers: Mapping[str, str], message: Message) -> None:
    """RpcError (400, -32020) when ``Mcp-Method`` or ``Mcp-Name`` differs from the body."""
    method = headers.get("mcp-method")
    if method is not None and method != message.method:
        raise RpcError(
            HEADER_MISMATCH,
            f"Mcp-Method header {method!r} does not match the body's method {message.method!r}",
            id=message.id,
        )
    name = headers.get("mcp-name")
    if name is None:
        return
    key = NAMED.get(message.method)
    body = message.params.get(key) if key is not None else None
    if key is None or decode_value(name) != body:
        raise RpcError(
            HEADER_MISMATCH,
            f"Mcp-Name header {name!r} does not match the body's {key or 'name'} {body!r}",
            id=message.id,
        )
