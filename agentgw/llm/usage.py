"""Token usage read from an answer on its way to the client (sans-IO: bytes in, a count out).

OpenAI: the ``usage`` of a ``chat.completion`` or of the last stream chunk (sent when the client
asked for ``stream_options.include_usage``). Anthropic: ``message_start``'s input tokens and the
last ``message_delta``'s output tokens, or a Message's ``usage``. A whole body is kept (up to
``MAX_BODY``) only when it is not a stream; a stream is read event by event and only events
mentioning ``usage`` are decoded.
"""

from __future__ import annotations

import zlib
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


def split(usage: dict[str, Any] | None) -> tuple[int, int]:
    """(input, output) tokens of a usage object of either format (cached input counts)."""
    if not usage:
        return 0, 0
    counted = {name: int(usage.get(name) or 0) for name in _COUNTED}
    input_tokens = counted["prompt_tokens"] + counted["input_tokens"]
    input_tokens += counted["cache_read_input_tokens"] + counted["cache_creation_input_tokens"]
    return input_tokens, counted["completion_tokens"] + counted["output_tokens"]


class UsageMeter:
    """Feed it the answer's bytes as sent (``encoding``: its Content-Encoding); ``tokens`` is the
    usage it reported ((0, 0) when none, or when the encoding is one it cannot read)."""

    def __init__(self, streaming: bool, encoding: str | None = None) -> None:
        self.reader: SseReader | None = SseReader() if streaming else None
        self.body: list[bytes] = []
        self.size = 0
        self.usage: dict[str, Any] = {}
        self.decoder: Any = None
        self.readable = encoding in (None, "identity", "gzip", "deflate")
        if encoding == "gzip":
            self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self.decoder = zlib.decompressobj()

    def feed(self, chunk: bytes) -> None:
        if not self.readable:
            return
        if self.decoder is not None:
            try:
                chunk = self.decoder.decompress(chunk)
            except zlib.error:
                self.readable = False
                return
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
    def tokens(self) -> tuple[int, int]:
        if not self.readable:
            return 0, 0
        if self.reader is None and self.body and self.size <= MAX_BODY:
            try:
                return split(orjson.loads(b"".join(self.body)).get("usage"))
            except (orjson.JSONDecodeError, AttributeError):
                return 0, 0
        return split(self.usage)
