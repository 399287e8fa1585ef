"""A provider stand-in for ``python -m bench.llm``: OpenAI chat completions and Anthropic Messages
answered at once with a fixed reply (no hosted API is reachable from the benchmark machine)."""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TEXT = "Hello from the benchmark's provider stand-in."


async def chat(request: Request) -> Response:
    body = orjson.loads(await request.body())
    answer = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": body["model"],
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": TEXT}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 9, "total_tokens": 18},
    }
    return Response(orjson.dumps(answer), media_type="application/json")


async def messages(request: Request) -> Response:
    body = orjson.loads(await request.body())
    answer = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": [{"type": "text", "text": TEXT}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 9, "output_tokens": 9},
    }
    return Response(orjson.dumps(answer), media_type="application/json")


app = Starlette(
    routes=[
        Route("/v1/chat/completions", chat, methods=["POST"]),
        Route("/v1/messages", messages, methods=["POST"]),
    ]
)
