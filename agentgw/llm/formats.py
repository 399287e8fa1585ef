"""The two client formats: which paths speak which, and their error bodies and stream events."""

from __future__ import annotations

from enum import Enum

import orjson
from starlette.responses import Response


class ClientFormat(Enum):
    """The wire format a client speaks (chosen by the path it called)."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    429: "rate_limit_exceeded",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}
_OPENAI_CODES = {401: "invalid_api_key", 404: "model_not_found"}


class LlmError(Exception):
    """A request the gateway answers itself: status, message and (OpenAI) the param at fault."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.headers = headers


def error_body(fmt: ClientFormat, status: int, message: str, param: str | None = None) -> bytes:
    """An error body as the client's own API would send it."""
    if fmt is ClientFormat.ANTHROPIC:
        kind = _ANTHROPIC_TYPES.get(status, "api_error")
        return orjson.dumps({"type": "error", "error": {"type": kind, "message": message}})
    error = {
        "message": message,
        "type": _OPENAI_TYPES.get(status, "server_error"),
        "param": param,
        "code": _OPENAI_CODES.get(status),
    }
    return orjson.dumps({"error": error})


def error_response(
    fmt: ClientFormat, error: LlmError, headers: dict[str, str] | None = None
) -> Response:
    """``error`` as a JSON response in the client's format."""
    body = error_body(fmt, error.status, error.message, error.param)
    merged = {**(error.headers or {}), **(headers or {})}
    return Response(body, error.status, merged or None, media_type="application/json")


def stream_error(fmt: ClientFormat, message: str) -> bytes:
    """The event that ends a stream that failed after it started, in the client's format."""
    if fmt is ClientFormat.ANTHROPIC:
        return b"event: error\ndata: " + error_body(fmt, 502, message) + b"\n\n"
    return b"data: " + error_body(fmt, 502, message) + b"\n\n"
