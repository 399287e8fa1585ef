"""A provider stand-in for ``python -m bench.llm``: OpenAI chat completions and Anthropic Messages
answered at once (no hosted API is reachable from the benchmark machine).

``max_tokens`` is the number of words in the reply. A streamed answer (``"stream": true``) sends
each word as a chunk of its own, as a provider streams tokens, then the usage: chat completions'
``data:`` chunks ending with ``[DONE]``, or Messages' typed events. The chunks are made once per
answer length, so the stand-in's own cost stays small next to the gateway's.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

WORD = "hello "


def _sse(payload: object, event: str | None = None) -> bytes:
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


@functools.lru_cache(maxsize=64)
def chat_chunks(model: str, words: int) -> tuple[bytes, ...]:
    """A streamed chat completion of ``words`` words, chunk by chunk."""
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    out = [_sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant"}}]})]
    for _ in range(words):
        out.append(_sse({**base, "choices": [{"index": 0, "delta": {"content": WORD}}]}))
    out.append(_sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}))
    usage = {"prompt_tokens": 9, "completion_tokens": words, "total_tokens": 9 + words}
    out.append(_sse({**base, "choices": [], "usage": usage}))
    out.append(b"data: [DONE]\n\n")
    return tuple(out)


@functools.lru_cache(maxsize=64)
def message_events(model: str, words: int) -> tuple[bytes, ...]:
    """A streamed Messages answer of ``words`` words, event by event."""
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 1},
    }
    out = [_sse({"type": "message_start", "message": message}, "message_start")]
    text: dict[str, object] = {"type": "text", "text": ""}
    block = {"type": "content_block_start", "index": 0, "content_block": text}
    out.append(_sse(block, "content_block_start"))
    word = {"type": "text_delta", "text": WORD}
    delta = {"type": "content_block_delta", "index": 0, "delta": word}
    out.extend(_sse(delta, "content_block_delta") for _ in range(words))
    out.append(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
    end = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": words},
    }
    out.append(_sse(end, "message_delta"))
    out.append(_sse({"type": "message_stop"}, "message_stop"))
    return tuple(out)


def _stream(chunks: tuple[bytes, ...]) -> StreamingResponse:
    async def each() -> AsyncIterator[bytes]:
        for chunk in chunks:
            yield chunk

    return StreamingResponse(each(), media_type="text/event-stream")


async def chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    words = int(body.get("max_tokens") or 8)
    if body.get("stream"):
        return _stream(chat_chunks(body["model"], words))
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": WORD * words},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": words, "total_tokens": 9 + words},
    }
    return Response(orjson.dumps(answer), media_type="application/json")


async def messages(request: Request) -> Response:
    body = orjson.loads(await request.body())
    words = int(body.get("max_tokens") or 8)
    if body.get("stream"):
        return _stream(message_events(body["model"], words))
    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": WORD * words}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": words},
    }
    return Response(orjson.dumps(answer), media_type="application/json")


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
    ]
)
