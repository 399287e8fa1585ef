"""The body's ``model`` value replaced in place: every other byte of the request stays as sent.

The top-level object is walked token by token — whole strings (escapes included) and brackets,
matched by one regular expression in C — so a key is told from a value and a nested ``model``
(inside ``messages``, ``tools``...) is never touched. Each top-level ``"model"`` key's string
value (a key spelled with escapes too; every one, should a body repeat the key) is replaced by
the new name as a JSON string. The body was already decoded (``parse_body``): it is valid JSON
and its ``model`` is a string.
"""

from __future__ import annotations

import re

import orjson

_TOKEN = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[{}\[\]]', re.DOTALL)
_COLON = re.compile(rb"[ \t\r\n]*:[ \t\r\n]*")
_MODEL_KEY = b'"model"'
_LONGEST_KEY = 64  # a longer key, even with escapes, cannot spell "model"
_OPEN, _CLOSE, _QUOTE = frozenset(b"{["), frozenset(b"}]"), ord('"')


def model_spans(body: bytes) -> list[tuple[int, int]]:
    """Where the top-level ``model`` string values are: ``(start, end)`` with their quotes."""
    spans: list[tuple[int, int]] = []
    depth = 0
    for token in _TOKEN.finditer(body):
        start, end = token.span()
        first = body[start]
        if first in _OPEN:
            depth += 1
        elif first in _CLOSE:
            depth -= 1
        elif depth == 1 and end - start <= _LONGEST_KEY:
            colon = _COLON.match(body, end)
            if colon is None:
                continue  # a value, not a key
            key = body[start:end]
            if key == _MODEL_KEY or (b"\\" in key and orjson.loads(key) == "model"):
                value = _TOKEN.match(body, colon.end())
                if value is not None and body[value.start()] == _QUOTE:
                    spans.append(value.span())
    return spans


def replace_model(body: bytes, model: str) -> bytes:
    """``body`` with its top-level ``model`` value(s) set to ``model``; the rest byte for byte."""
    spans = model_spans(body)
    if not spans:
        return body
    value = orjson.dumps(model)
    pieces: list[bytes] = []
    at = 0
    for start, end in spans:
        pieces += (body[at:start], value)
        at = end
    pieces.append(body[at:])
    return b"".join(pieces)
