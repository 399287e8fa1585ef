"""An OpenAI chat-completions client served by an Anthropic Messages provider.

``request`` turns a chat request into a Messages request; ``response`` a Message into a
``chat.completion``; :class:`ChatStream` Messages stream events into ``chat.completion.chunk``
SSE lines, one or none per event, as they arrive.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from agentgw.llm.translate import FINISH_FROM_STOP, UnsupportedField, only

_MESSAGE = frozenset({"role", "content", "tool_calls", "tool_call_id"})
_TEXT_PART = frozenset({"type", "text"})
_IMAGE_PART = frozenset({"type", "image_url"})
_IMAGE_URL = frozenset({"url"})
_CALL = frozenset({"id", "type", "function"})
_FUNCTION = frozenset({"name", "description", "parameters"})
DEFAULT_MAX_TOKENS = 4096  # Messages requires max_tokens; chat completions does not
# Fields Anthropic has no equivalent for: refused unless they hold the value that means "off".
_HARMLESS = {
    "n": (1, None),
    "logprobs": (False, None),
    "presence_penalty": (0, 0.0, None),
    "frequency_penalty": (0, 0.0, None),
    "store": (False, None),
}
_HANDLED = {
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "stop",
    "stream",
    "stream_options",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
}


def request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The Messages request for chat request ``body`` (``model`` already resolved)."""
    for name, value in body.items():
        if name in _HANDLED:
            continue
        if name in _HARMLESS and value in _HARMLESS[name]:
            continue
        raise UnsupportedField(
            name, "not supported when the model is served by an Anthropic provider"
        )
    out: dict[str, Any] = {"model": model}
    system, messages = _messages(body.get("messages"))
    if system:
        out["system"] = system
    out["messages"] = messages
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    out["max_tokens"] = DEFAULT_MAX_TOKENS if limit is None else limit
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p")):
        if body.get(ours) is not None:
            out[theirs] = body[ours]
    stop = body.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        out["stream"] = True
    if body.get("tools"):
        out["tools"] = [_tool(i, tool) for i, tool in enumerate(body["tools"])]
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None:
        out["tool_choice"] = choice
    if body.get("user") is not None:
        out["metadata"] = {"user_id": body["user"]}
    return out


def _messages(raw: Any) -> tuple[str, list[dict[str, Any]]]:
    if not isinstance(raw, list) or not raw:
        raise UnsupportedField("messages", "a non-empty array is required")
    system: list[str] = []
    out: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise UnsupportedField(where, "an object is required")
        only(message, _MESSAGE, where)
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text_only(message.get("content"), f"{where}.content"))
            continue
        if role == "tool":
            block = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _text_only(message.get("content"), f"{where}.content"),
            }
            _append(out, "user", [block])
        elif role == "user":
            _append(out, "user", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            _append(out, "assistant", _assistant_blocks(message, where))
        else:
            raise UnsupportedField(
                f"{where}.role", f"{role!r} is not system, user, assistant or tool"
            )
    return "\n\n".join(system), out


def _append(out: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    # Messages alternates roles: consecutive turns of one role (several tool results) merge.
    if out and out[-1]["role"] == role:
        out[-1]["content"].extend(blocks)
    else:
        out.append({"role": role, "content": blocks})


def _text_only(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" for p in content
    ):
        for i, part in enumerate(content):
            only(part, _TEXT_PART, f"{where}[{i}]")
        return "".join(p.get("text", "") for p in content)
    raise UnsupportedField(where, "only text is supported here")


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise UnsupportedField(where, "a string or an array of parts is required")
    blocks: list[dict[str, Any]] = []
    for i, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            only(part, _TEXT_PART, f"{where}[{i}]")
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif kind == "image_url":
            only(part, _IMAGE_PART, f"{where}[{i}]")
            image = part.get("image_url") or {}
            if image.get("detail") == "auto":
                image = {k: v for k, v in image.items() if k != "detail"}
            only(image, _IMAGE_URL, f"{where}[{i}].image_url")
            blocks.append(_image(image, f"{where}[{i}].image_url"))
        else:
            raise UnsupportedField(f"{where}[{i}].type", f"{kind!r} parts are not supported")
    return blocks


def _image(image: dict[str, Any], where: str) -> dict[str, Any]:
    url = image.get("url")
    if not isinstance(url, str):
        raise UnsupportedField(f"{where}.url", "a string is required")
    if url.startswith("data:"):
        head, _, data = url[5:].partition(",")
        media, _, encoding = head.partition(";")
        if encoding != "base64":
            raise UnsupportedField(f"{where}.url", "a data URL must be base64")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = message.get("content")
    if content:
        blocks.append({"type": "text", "text": _text_only(content, f"{where}.content")})
    for i, call in enumerate(message.get("tool_calls") or ()):
        only(call, _CALL, f"{where}.tool_calls[{i}]")
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError as exc:
            raise UnsupportedField(
                f"{where}.tool_calls[{i}].function.arguments", f"not JSON ({exc})"
            ) from exc
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments,
            }
        )
    return blocks


def _tool(i: int, tool: dict[str, Any]) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise UnsupportedField(f"tools[{i}].type", "only function tools are supported")
    function = tool.get("function") or {}
    # strict: false is what a schema means to Anthropic anyway; strict: true it cannot promise.
    loose = function.get("strict") is False
    only(function, _FUNCTION | {"strict"} if loose else _FUNCTION, f"tools[{i}].function")
    out = {
        "name": function.get("name"),
        "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
    }
    if function.get("description"):
        out["description"] = function["description"]
    return out


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is None:
        return None
    out: dict[str, Any]
    if choice is None or choice == "auto":
        out = {"type": "auto"}
    elif choice == "none":
        out = {"type": "none"}
    elif choice == "required":
        out = {"type": "any"}
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out = {"type": "tool", "name": (choice.get("function") or {}).get("name")}
    else:
        raise UnsupportedField("tool_choice", f"{choice!r} is not supported")
    if parallel is False and out["type"] != "none":
        out["disable_parallel_tool_use"] = True
    return out


def usage(raw: dict[str, Any]) -> dict[str, int]:
    """Messages usage as chat-completions usage (cached input counts as prompt tokens)."""
    prompt = (
        raw.get("input_tokens", 0)
        + (raw.get("cache_read_input_tokens") or 0)
        + (raw.get("cache_creation_input_tokens") or 0)
    )
    completion = raw.get("output_tokens", 0)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def response(message: dict[str, Any]) -> dict[str, Any]:
    """A Messages response as a ``chat.completion``."""
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or ():
        if block.get("type") == "text":
            text.append(block.get("text", ""))
        elif block.get("type") == "tool_use":
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text else None}
    if calls:
        reply["tool_calls"] = calls
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model"),
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH_FROM_STOP.get(message.get("stop_reason") or "", "stop"),
                "logprobs": None,
            }
        ],
        "usage": usage(message.get("usage") or {}),
    }


class ChatStream:
    """Messages stream events in, ``chat.completion.chunk`` SSE lines out."""

    def __init__(self, include_usage: bool) -> None:
        self.include_usage = include_usage
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.usage: dict[str, Any] = {}
        self.tools: dict[int, int] = {}  # content block index -> tool_calls index
        self.done = False

    def feed(self, event: str, data: dict[str, Any]) -> list[bytes]:
        """The chunks one event makes (``event`` is the SSE event type)."""
        kind = data.get("type", event)
        if kind == "message_start":
            message = data.get("message") or {}
            self.id, self.model = message.get("id", ""), message.get("model", "")
            self.usage = dict(message.get("usage") or {})
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") != "tool_use":
                return []
            position = self.tools[data.get("index", 0)] = len(self.tools)
            call = {
                "index": position,
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "text_delta":
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                position = self.tools.get(data.get("index", 0), 0)
                call = {"index": position, "function": {"arguments": delta.get("partial_json", "")}}
                return [self._chunk({"tool_calls": [call]})]
            return []
        if kind == "message_delta":
            self.usage.update(data.get("usage") or {})
            stop = (data.get("delta") or {}).get("stop_reason") or ""
            return [self._chunk({}, FINISH_FROM_STOP.get(stop, "stop"))]
        if kind == "message_stop":
            return self.finish()
        if kind == "error":
            self.done = True
            error = data.get("error") or {}
            body = {
                "error": {
                    "message": error.get("message", "provider error"),
                    "type": error.get("type"),
                }
            }
            return [b"data: " + orjson.dumps(body) + b"\n\n"]
        return []

    def finish(self) -> list[bytes]:
        """The end of the stream: the usage chunk (when asked for) and ``[DONE]``."""
        if self.done:
            return []
        self.done = True
        out: list[bytes] = []
        if self.include_usage:
            out.append(self._line({**self._base(), "choices": [], "usage": usage(self.usage)}))
        out.append(b"data: [DONE]\n\n")
        return out

    def _base(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        chunk: dict[str, Any] = {**self._base(), "choices": [choice]}
        if self.include_usage:
            chunk["usage"] = None
        return self._line(chunk)

    @staticmethod
    def _line(chunk: dict[str, Any]) -> bytes:
        return b"data: " + orjson.dumps(chunk) + b"\n\n"
