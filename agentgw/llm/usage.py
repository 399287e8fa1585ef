"""Token usage read from an answer on its way to the client (sans-IO: bytes in, a count out).

OpenAI: the ``usage`` of a ``chat.completion`` or of the last stream chunk (sent when the client
asked for ``stream_options.include_usage``). Anthropic: ``message_start``'s input tokens and the
last ``message_delta``'s output tokens, or a Message's ``usage``. A whole body is kept (up to
``MAX_BODY``) only when it is not a stream; a stream is read event by event and only events
mentioning ``usage`` are decoded.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.protocols.sse import SseReader

MAX_BODY = 16 << 20
_COUNTED = (
    "input_tokens",
    "output_tokens",
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "prompt_tokens",
    "completion_tokens",
)


def total(usage: dict[str, Any] | None) -> int:
    """Input plus output tokens of a usage object of either format."""
    if not usage:
        return 0
    if "total_tokens" in usage:
        return int(usage.get("total_tokens") or 0)
    return sum(int(usage.get(name) or 0) for name in _COUNTED)


class UsageMeter:
    """Feed it the answer's bytes; ``tokens`` is the usage it reported (0 when none)."""

    def __init__(self, streaming: bool) -> None:
        self.reader: SseReader | None = SseReader() if streaming else None
        self.body: list[bytes] = []
        self.size = 0
        self.usage: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> None:
        if self.reader is None:
            self.size += len(chunk)
            if self.size <= MAX_BODY:
                self.body.append(chunk)
            return
        for event in self.reader.feed(chunk):
            if "usage" in event.data:
                self._event(orjson.loads(event.data))

    def _event(self, data: dict[str, Any]) -> None:
        if data.get("type") == "message_start":
            self.usage.update((data.get("message") or {}).get("usage") or {})
        elif data.get("usage"):
            self.usage.update(data["usage"])

    @property
    def tokens(self) -> int:
        if self.reader is None and self.body and self.size <= MAX_BODY:
            try:
                return total(orjson.loads(b"".join(self.body)).get("usage"))
            except (orjson.JSONDecodeError, AttributeError):
                return 0
        return total(self.usage)
