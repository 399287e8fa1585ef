"""The tool calls an answer asks for, read from either format, whole or streamed (sans-IO).

OpenAI: ``choices[].message.tool_calls[]`` of a completion; in a stream, ``delta.tool_calls[]``
pieces by ``index`` (the id and name in the first, the arguments' JSON in fragments). Anthropic:
``content[]`` blocks of type ``tool_use`` of a Message; in a stream, ``content_block_start`` with
a ``tool_use`` block, then ``input_json_delta`` fragments for that block's index.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class _Call:
    call_id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    whole: Any = None  # arguments given whole (an object), not in fragments


class ToolCallReader:
    """Feed it an answer (``answer``) or its stream's parsed events (``event``); ``calls()``
    lists (id, name, arguments) of the tool calls it asked for."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[tuple[int, int], _Call] = {}

    def answer(self, answer: Any) -> None:
        """A whole answer of either format."""
        if not isinstance(answer, dict):
            return
        for position, choice in enumerate(answer.get("choices") or ()):
            message = (choice or {}).get("message") or {}
            for index, call in enumerate(message.get("tool_calls") or ()):
                function = (call or {}).get("function") or {}
                entry = self._at(position, index)
                entry.call_id = str(call.get("id") or "")
                entry.name = str(function.get("name") or "")
                entry.arguments = [str(function.get("arguments") or "")]
        for index, block in enumerate(answer.get("content") or ()):
            if isinstance(block, dict) and block.get("type") == "tool_use":
                entry = self._at(0, index)
                entry.call_id, entry.name = str(block.get("id") or ""), str(block.get("name"))
                entry.whole = block.get("input")

    def event(self, data: Any) -> None:
        """One stream event's data, of either format."""
        if not isinstance(data, dict):
            return
        kind = data.get("type")
        if kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                entry = self._at(0, int(data.get("index") or 0))
                entry.call_id, entry.name = str(block.get("id") or ""), str(block.get("name"))
                if block.get("input"):
                    entry.whole = block["input"]
            return
        if kind == "content_block_delta":
            delta = data.get("delta") or {}
            if delta.get("type") == "input_json_delta":
                started = self._calls.get((0, int(data.get("index") or 0)))
                if started is not None:
                    started.arguments.append(str(delta.get("partial_json") or ""))
            return
        for choice in data.get("choices") or ():
            position = int((choice or {}).get("index") or 0)
            for call in ((choice or {}).get("delta") or {}).get("tool_calls") or ():
                entry = self._at(position, int(call.get("index") or 0))
                if call.get("id"):
                    entry.call_id = str(call["id"])
                function = call.get("function") or {}
                if function.get("name"):
                    entry.name = str(function["name"])
                if function.get("arguments"):
                    entry.arguments.append(str(function["arguments"]))

    def calls(self) -> list[tuple[str, str, Any]]:
        """(id, name, arguments) of each complete call, in the answer's order."""
        out = []
        for _, entry in sorted(self._calls.items()):
            if entry.call_id and entry.name:
                joined = "".join(entry.arguments)
                arguments = joined if joined else entry.whole
                out.append((entry.call_id, entry.name, arguments))
        return out

    def _at(self, position: int, index: int) -> _Call:
        entry = self._calls.get((position, index))
        if entry is None:
            entry = self._calls[(position, index)] = _Call()
        return entry
