"""An Anthropic Messages client served by an OpenAI chat-completions provider.

``request`` turns a Messages request into a chat request; ``response`` a ``chat.completion``
into a Message; :class:`MessagesStream` ``chat.completion.chunk`` payloads into Messages SSE
events (``message_start``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``,
``message_stop``) as they arrive.
"""

from __future__ import annotations

from typing import Any

import orjson

from agentgw.llm.translate import STOP_FROM_FINISH, UnsupportedField, only

# cache_control is a caching hint: OpenAI providers cache long prompts by themselves, so it is
# accepted and not forwarded (the one block field that is; docs/architecture.md says so).
_BLOCKS = {
    "text": frozenset({"type", "text", "cache_control"}),
    "image": frozenset({"type", "source", "cache_control"}),
    "tool_use": frozenset({"type", "id", "name", "input", "cache_control"}),
    "tool_result": frozenset({"type", "tool_use_id", "content", "cache_control"}),
}
_MESSAGE = frozenset({"role", "content"})
_TOOL = frozenset({"type", "name", "description", "input_schema", "cache_control"})
_HANDLED = {
    "model",
    "messages",
    "system",
    "max_tokens",
    "temperature",
    "top_p",
    "stop_sequences",
    "stream",
    "tools",
    "tool_choice",
    "metadata",
}


def request(body: dict[str, Any], model: str) -> dict[str, Any]:
    """The chat request for Messages request ``body`` (``model`` already resolved)."""
    for name in body:
        if name not in _HANDLED:
            raise UnsupportedField(
                name, "not supported when the model is served by an OpenAI provider"
            )
    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        messages.append({"role": "system", "content": _text(system, "system")})
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise UnsupportedField("messages", "a non-empty array is required")
    for i, message in enumerate(raw):
        messages.extend(_message(message, f"messages[{i}]"))
    out: dict[str, Any] = {"model": model, "messages": messages}
    if body.get("max_tokens") is not None:
        out["max_tokens"] = body["max_tokens"]
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}  # Messages always reports usage
    if body.get("tools"):
        out["tools"] = [_tool(i, tool) for i, tool in enumerate(body["tools"])]
    if body.get("tool_choice") is not None:
        out.update(_tool_choice(body["tool_choice"]))
    metadata = body.get("metadata") or {}
    for key in metadata:
        if key != "user_id":
            raise UnsupportedField(f"metadata.{key}", "not supported by an OpenAI provider")
    if metadata.get("user_id") is not None:
        out["user"] = metadata["user_id"]
    return out


def _text(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, block in enumerate(content):
            if not isinstance(block, dict) or block.get("type") != "text":
                raise UnsupportedField(f"{where}[{i}].type", "only text blocks are supported here")
            only(block, _BLOCKS["text"], f"{where}[{i}]")
            parts.append(block.get("text", ""))
        return "".join(parts)
    raise UnsupportedField(where, "a string or an array of text blocks is required")


def _message(message: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(message, dict):
        raise UnsupportedField(where, "an object is required")
    only(message, _MESSAGE, where)
    role, content = message.get("role"), message.get("content")
    if role not in ("user", "assistant"):
        raise UnsupportedField(f"{where}.role", f"{role!r} is not user or assistant")
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    if not isinstance(content, list):
        raise UnsupportedField(f"{where}.content", "a string or an array of blocks is required")
    out: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    calls: list[dict[str, Any]] = []
    for i, block in enumerate(content):
        at = f"{where}.content[{i}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind in _BLOCKS:
            if kind == "tool_result" and block.get("is_error") is False:
                block = {k: v for k, v in block.items() if k != "is_error"}
            only(block, _BLOCKS[kind], at)
        if kind == "text":
            parts.append({"type": "text", "text": block.get("text", "")})
        elif kind == "image" and role == "user":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, at)}})
        elif kind == "tool_result" and role == "user":
            # Tool results are their own turns in chat completions, before the user's text.
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": block.get("tool_use_id"),
                    "content": _text(block.get("content", ""), f"{at}.content"),
                }
            )
        elif kind == "tool_use" and role == "assistant":
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
        else:
            raise UnsupportedField(
                f"{at}.type", f"{kind!r} blocks are not supported in {role} turns"
            )
    if role == "assistant":
        turn: dict[str, Any] = {
            "role": "assistant",
            "content": "".join(p["text"] for p in parts) or None,
        }
        if calls:
            turn["tool_calls"] = calls
        out.append(turn)
    elif parts:
        simple = all(p["type"] == "text" for p in parts)
        out.append(
            {"role": "user", "content": "".join(p["text"] for p in parts) if simple else parts}
        )
    return out


def _image_url(block: dict[str, Any], where: str) -> str:
    source = block.get("source") or {}
    if source.get("type") == "url":
        return str(source.get("url"))
    if source.get("type") == "base64":
        return f"data:{source.get('media_type')};base64,{source.get('data')}"
    raise UnsupportedField(f"{where}.source.type", f"{source.get('type')!r} is not url or base64")


def _tool(i: int, tool: dict[str, Any]) -> dict[str, Any]:
    only(tool, _TOOL, f"tools[{i}]")
    if tool.get("type") not in (None, "custom"):
        raise UnsupportedField(
            f"tools[{i}].type", f"server tool {tool.get('type')!r} is not supported"
        )
    function: dict[str, Any] = {
        "name": tool.get("name"),
        "parameters": tool.get("input_schema") or {},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any]) -> dict[str, Any]:
    kind = choice.get("type")
    out: dict[str, Any]
    if kind == "auto":
        out = {"tool_choice": "auto"}
    elif kind == "any":
        out = {"tool_choice": "required"}
    elif kind == "none":
        out = {"tool_choice": "none"}
    elif kind == "tool":
        out = {"tool_choice": {"type": "function", "function": {"name": choice.get("name")}}}
    else:
        raise UnsupportedField("tool_choice.type", f"{kind!r} is not auto, any, none or tool")
    if choice.get("disable_parallel_tool_use"):
        out["parallel_tool_calls"] = False
    return out


def usage(raw: dict[str, Any] | None) -> dict[str, int]:
    """Chat-completions usage as Messages usage."""
    raw = raw or {}
    return {
        "input_tokens": raw.get("prompt_tokens", 0),
        "output_tokens": raw.get("completion_tokens", 0),
    }


def response(completion: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` as a Messages response (its first choice)."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": _arguments(function.get("arguments")),
            }
        )
    return {
        "id": completion.get("id"),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": STOP_FROM_FINISH.get(choice.get("finish_reason") or "", "end_turn"),
        "stop_sequence": None,
        "usage": usage(completion.get("usage")),
    }


def _arguments(raw: Any) -> Any:
    try:
        return orjson.loads(raw or "{}")
    except orjson.JSONDecodeError:
        return {"_raw": raw}  # a provider's malformed arguments stay visible to the client


class MessagesStream:
    """``chat.completion.chunk`` payloads in, Messages SSE events out."""

    def __init__(self) -> None:
        self.started = False
        self.block: tuple[str, int] | None = None  # ("text" | "tool", tool_calls index)
        self.index = -1  # the current content block's index
        self.stop = "end_turn"
        self.usage: dict[str, Any] | None = None
        self.model = ""
        self.done = False

    def feed(self, chunk: dict[str, Any]) -> list[bytes]:
        """The events one chunk makes."""
        out: list[bytes] = []
        if not self.started:
            self.started = True
            self.model = str(chunk.get("model") or "")
            message: dict[str, Any] = {
                "id": chunk.get("id"),
                "type": "message",
                "role": "assistant",
                "model": chunk.get("model"),
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 0, "output_tokens": 0},
            }
            out.append(_event("message_start", {"type": "message_start", "message": message}))
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.block is None or self.block[0] != "text":
                    out += self._open({"type": "text", "text": ""}, ("text", -1))
                out.append(self._delta({"type": "text_delta", "text": delta["content"]}))
            for call in delta.get("tool_calls") or ():
                position = call.get("index", 0)
                function = call.get("function") or {}
                if self.block != ("tool", position):
                    block = {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": function.get("name"),
                        "input": {},
                    }
                    out += self._open(block, ("tool", position))
                if function.get("arguments"):
                    out.append(
                        self._delta(
                            {"type": "input_json_delta", "partial_json": function["arguments"]}
                        )
                    )
            if choice.get("finish_reason"):
                self.stop = STOP_FROM_FINISH.get(choice["finish_reason"], "end_turn")
        return out

    def error(self, message: dict[str, Any]) -> list[bytes]:
        """A provider error inside the stream, as a Messages ``error`` event that ends it."""
        self.done = True
        error = {"type": "api_error", "message": str(message.get("message", "provider error"))}
        return [_event("error", {"type": "error", "error": error})]

    def finish(self) -> list[bytes]:
        """The closing events: the open block's stop, ``message_delta``, ``message_stop``."""
        if self.done:
            return []
        self.done = True
        out = self._close()
        delta = {"stop_reason": self.stop, "stop_sequence": None}
        out.append(
            _event(
                "message_delta",
                {"type": "message_delta", "delta": delta, "usage": usage(self.usage)},
            )
        )
        out.append(_event("message_stop", {"type": "message_stop"}))
        return out

    def _open(self, block: dict[str, Any], key: tuple[str, int]) -> list[bytes]:
        out = self._close()
        self.index += 1
        self.block = key
        data = {"type": "content_block_start", "index": self.index, "content_block": block}
        out.append(_event("content_block_start", data))
        return out

    def _close(self) -> list[bytes]:
        if self.block is None:
            return []
        self.block = None
        return [_event("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return _event(
            "content_block_delta",
            {"type": "content_block_delta", "index": self.index, "delta": delta},
        )


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"
