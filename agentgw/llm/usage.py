"""Token usage read from an answer on its way to the client (sans-IO: bytes in, a count out).

OpenAI: the ``usage`` of a ``chat.completion`` or of the last stream chunk (sent when the client
asked for ``stream_options.include_usage``). Anthropic: ``message_start``'s input tokens and the
last ``message_delta``'s output tokens, or a Message's ``usage``. A whole body is kept (up to
``MAX_BODY``) only when it is not a stream; a stream is read event by event and only events
mentioning ``usage`` are decoded.
"""

from __future__ import annotations

import re
import zlib
from typing import Any, NamedTuple

import orjson

from agentgw.llm.asked_tools import ToolCallReader
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


class Usage(NamedTuple):
    """An answer's tokens as its provider reported them."""

    input: int = 0  # every input token, those read from the prompt cache included
    output: int = 0
    cached: int = 0  # input tokens read from the provider's prompt cache
    model: str = ""  # the model that answered, when the answer said

    @property
    def total(self) -> int:
        return self.input + self.output


def split(usage: dict[str, Any] | None, model: str = "") -> Usage:
    """The tokens of a usage object of either format: OpenAI's ``prompt_tokens`` include its
    ``prompt_tokens_details.cached_tokens``; Anthropic's ``input_tokens`` exclude the cache's
    reads and writes, which are added."""
    if not usage:
        return Usage(model=model)
    counted = {name: int(usage.get(name) or 0) for name in _COUNTED}
    cached = counted["cache_read_input_tokens"]
    details = usage.get("prompt_tokens_details")
    if isinstance(details, dict):
        cached += int(details.get("cached_tokens") or 0)
    input_tokens = counted["prompt_tokens"] + counted["input_tokens"]
    input_tokens += counted["cache_read_input_tokens"] + counted["cache_creation_input_tokens"]
    output = counted["completion_tokens"] + counted["output_tokens"]
    return Usage(input_tokens, output, cached, model)


class UsageMeter:
    """Feed it the answer's bytes as sent (``encoding``: its Content-Encoding); ``tokens`` is the
    usage it reported ((0, 0) when none, or when the encoding is one it cannot read). With
    ``tools``, the tool calls the answer asks for are read too (the events that carry them as
    they pass; a whole answer when ``tokens`` reads it)."""

    def __init__(
        self, streaming: bool, encoding: str | None = None, tools: ToolCallReader | None = None
    ) -> None:
        self.tools = tools
        self.reader: SseReader | None = SseReader() if streaming else None
        self.body: list[bytes] = []
        self.size = 0
        self.usage: dict[str, Any] = {}
        self.model = ""
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
        tools = self.tools
        for event in self.reader.feed(chunk):
            data = event.data
            if "usage" in data:
                self._event(orjson.loads(data))
            if tools is not None and ("tool_" in data or "input_json" in data):
                tools.event(orjson.loads(data))

    def _event(self, data: dict[str, Any]) -> None:
        if data.get("type") == "message_start":
            message = data.get("message") or {}
            self.usage.update(message.get("usage") or {})
            self.model = str(message.get("model") or self.model)
        elif data.get("usage"):
            self.usage.update(data["usage"])
            self.model = str(data.get("model") or self.model)

    @property
    def tokens(self) -> Usage:
        if not self.readable:
            return Usage()
        if self.reader is None and self.body and self.size <= MAX_BODY:
            try:
                answer = orjson.loads(b"".join(self.body))
                if self.tools is not None:
                    self.tools.answer(answer)
                return split(answer.get("usage"), str(answer.get("model") or ""))
            except (orjson.JSONDecodeError, AttributeError):
                return Usage()
        return split(self.usage, self.model)


class UsageStripper:
    """Takes out of a chat-completions stream what asking for ``stream_options.include_usage``
    added when the client did not ask: the last chunk (``choices: []`` with the usage) and the
    ``"usage":null`` of the others (sans-IO: bytes in, bytes for the client out).

    Events pass whole: bytes wait here until their event's blank line arrived.
    """

    def __init__(self) -> None:
        self.pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self.pending + chunk
        lf, crlf = data.rfind(b"\n\n"), data.rfind(b"\r\n\r\n")
        end = max(lf + 2 if lf >= 0 else -1, crlf + 4 if crlf >= 0 else -1)
        if end < 0:
            self.pending = data
            return b""
        whole, self.pending = data[:end], data[end:]
        if b'"usage"' not in whole:
            return whole
        return b"".join(self._event(event) for event in _events(whole))

    def flush(self) -> bytes:
        """Whatever is left when the stream ended (an unfinished event passes as it is)."""
        rest, self.pending = self.pending, b""
        return rest

    @staticmethod
    def _event(event: bytes) -> bytes:
        if b'"usage"' not in event:
            return event
        if b'"usage":null' in event:
            return event.replace(b',"usage":null', b"").replace(b'"usage":null,', b"")
        body = event.split(b"data:", 1)[-1].strip()
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return event
        if isinstance(payload, dict) and payload.get("choices") == [] and "usage" in payload:
            return b""
        return event


_EVENT_END = re.compile(rb"(?<=\n\n)|(?<=\r\n\r\n)")


def _events(data: bytes) -> list[bytes]:
    """``data`` (whole events) cut after each event's blank line, separators kept."""
    return [event for event in _EVENT_END.split(data) if event]
