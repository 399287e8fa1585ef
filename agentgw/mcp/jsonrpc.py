"""JSON-RPC 2.0 as MCP uses it: one message per body, classified and checked, no I/O.

:func:`parse` turns a body into a :class:`Message` or raises :class:`RpcError` with the JSON-RPC
code and the HTTP status the transport answers with; :func:`result` and :func:`error` build the
messages the gateway writes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import orjson

PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
HEADER_MISMATCH = -32020  # MCP 2026-07-28: Mcp-Method / Mcp-Name differ from the body

Id = int | str


class Kind(enum.Enum):
    """What a JSON-RPC message is."""

    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"  # a result or an error


class RpcError(Exception):
    """A message refused: its JSON-RPC ``code``, the HTTP ``status`` to answer with, the id."""

    def __init__(self, code: int, message: str, status: int = 400, id: Id | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.id = id

    def body(self) -> dict[str, Any]:
        """The JSON-RPC error message."""
        return error(self.id, self.code, self.message)


@dataclass(frozen=True, slots=True)
class Message:
    """One JSON-RPC message: its kind, id, method and params, and the object itself."""

    kind: Kind
    raw: dict[str, Any]
    id: Id | None = None
    method: str = ""

    @property
    def params(self) -> dict[str, Any]:
        params = self.raw.get("params")
        return params if isinstance(params, dict) else {}


def parse(body: bytes) -> Message:
    """The message in ``body``; RpcError (HTTP 400) for anything else."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RpcError(PARSE_ERROR, f"the body is not JSON: {exc}") from exc
    if isinstance(value, list):
        raise RpcError(INVALID_REQUEST, "batches are not supported (one message per POST)")
    return classify(value)


def classify(value: Any) -> Message:
    """The :class:`Message` of a decoded JSON value; RpcError if it is not one."""
    if not isinstance(value, dict) or value.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'not a JSON-RPC 2.0 message (expected "jsonrpc": "2.0")')
    id_ = value.get("id")
    if id_ is not None and (isinstance(id_, bool) or not isinstance(id_, int | str)):
        raise RpcError(INVALID_REQUEST, "id: expected a string or an integer")
    method = value.get("method")
    if method is not None:
        if not isinstance(method, str) or not method:
            raise RpcError(INVALID_REQUEST, "method: expected a non-empty string", id=id_)
        params = value.get("params")
        if params is not None and not isinstance(params, dict):
            raise RpcError(INVALID_REQUEST, "params: expected an object", id=id_)
        kind = Kind.NOTIFICATION if "id" not in value else Kind.REQUEST
        if kind is Kind.REQUEST and id_ is None:
            raise RpcError(INVALID_REQUEST, "id: a request's id must not be null")
        return Message(kind, value, id_, method)
    if ("result" in value) == ("error" in value):
        raise RpcError(INVALID_REQUEST, "a response has exactly one of result and error", id=id_)
    return Message(Kind.RESPONSE, value, id_)


def result(id: Id | None, value: dict[str, Any]) -> dict[str, Any]:
    """A result message."""
    return {"jsonrpc": "2.0", "id": id, "result": value}


def error(id: Id | None, code: int, message: str, data: Any = None) -> dict[str, Any]:
    """An error message (``id`` None when the request's id is unknown)."""
    body: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        body["data"] = data
    return {"jsonrpc": "2.0", "id": id, "error": body}
