"""Sans-IO translators between OpenAI chat completions and Anthropic Messages.

``chat_to_messages``: an OpenAI client served by an Anthropic provider (request out, response and
stream events back). ``messages_to_chat``: an Anthropic client served by an OpenAI provider. Each
takes decoded JSON (or SSE events) and returns what to send; none touches a socket. A field the
other side cannot express raises :class:`UnsupportedField` naming it: nothing is dropped silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class UnsupportedField(ValueError):
    """A request field the provider's format cannot carry (400 naming ``field``)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field


def only(obj: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    """Refuse a key of ``obj`` outside ``allowed`` that holds a value (null means absent)."""
    for key, value in obj.items():
        if key not in allowed and value is not None:
            raise UnsupportedField(f"{where}.{key}", "has no equivalent in the provider's format")


# Anthropic stop_reason -> OpenAI finish_reason, and back.
FINISH_FROM_STOP = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "pause_turn": "stop",
    "refusal": "content_filter",
}
STOP_FROM_FINISH = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
