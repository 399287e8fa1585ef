"""The sans-IO translators between OpenAI chat completions and Anthropic Messages."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from agentgw.llm.translate import UnsupportedField, chat_to_messages, messages_to_chat
from gateway.protocols.sse import SseReader

WEATHER = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def test_a_chat_request_becomes_a_messages_request() -> None:
    body = {
        "model": "smart",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is this?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "max_tokens": 100,
        "stop": "END",
        "tools": [WEATHER],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    out = chat_to_messages.request(body, "claude-sonnet-4-5")
    assert out["model"] == "claude-sonnet-4-5"
    assert out["system"] == "Be brief."
    assert out["max_tokens"] == 100 and out["stop_sequences"] == ["END"]
    user, assistant, result = out["messages"]
    assert user["content"][1] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.png"},
    }
    assert assistant["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}}
    ]
    assert result == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"}],
    }
    assert out["tools"] == [
        {
            "name": "weather",
            "description": "The weather in a city",
            "input_schema": WEATHER["function"]["parameters"],  # type: ignore[index]
        }
    ]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}


@pytest.mark.parametrize(
    ("field", "value"), [("logprobs", True), ("n", 2), ("response_format", {"type": "json_object"})]
)
def test_a_chat_field_anthropic_cannot_carry_is_refused_by_name(field: str, value: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: value}
    with pytest.raises(UnsupportedField) as raised:
        chat_to_messages.request(body, "m")
    assert raised.value.field == field


def test_a_messages_response_becomes_a_chat_completion() -> None:
    message = {
        "id": "msg_1",
        "model": "claude",
        "content": [
            {"type": "text", "text": "Checking."},
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        ],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 2},
    }
    out = chat_to_messages.response(message)
    (choice,) = out["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city":"Oslo"}',
    }
    assert out["usage"] == {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def anthropic_events(*events: tuple[str, dict[str, Any]]) -> bytes:
    return b"".join(
        f"event: {name}\ndata: ".encode() + orjson.dumps({"type": name, **data}) + b"\n\n"
        for name, data in events
    )


def test_a_messages_stream_becomes_chat_chunks_event_by_event() -> None:
    raw = anthropic_events(
        ("message_start", {"message": {"id": "msg_1", "model": "c", "usage": {"input_tokens": 9}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
        ("content_block_stop", {"index": 0}),
        (
            "content_block_start",
            {"index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "weather"}},
        ),
        (
            "content_block_delta",
            {"index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"ci'}},
        ),
        ("message_delta", {"delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 4}}),
        ("message_stop", {}),
    )
    stream = chat_to_messages.ChatStream(include_usage=True)
    reader = SseReader()
    chunks: list[bytes] = []
    # Fed a few bytes at a time: every event is translated as soon as it is complete.
    for at in range(0, len(raw), 7):
        for event in reader.feed(raw[at : at + 7]):
            chunks += stream.feed(event.event, orjson.loads(event.data))
    assert chunks[-1] == b"data: [DONE]\n\n"
    payloads = [orjson.loads(c[6:]) for c in chunks[:-1]]
    deltas = [p["choices"][0]["delta"] for p in payloads if p["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert deltas[1] == {"content": "Hi"}
    assert deltas[2]["tool_calls"][0]["function"] == {"name": "weather", "arguments": ""}
    assert deltas[3]["tool_calls"][0] == {"index": 0, "function": {"arguments": '{"ci'}}
    assert payloads[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert payloads[-1]["usage"] == {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}


def test_a_messages_request_becomes_a_chat_request() -> None:
    body = {
        "model": "fast",
        "system": [{"type": "text", "text": "Be brief."}],
        "max_tokens": 50,
        "messages": [
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "t1", "name": "weather", "input": {"c": 1}}],
            },
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "t1", "content": "sunny"},
                    {"type": "text", "text": "thanks"},
                ],
            },
        ],
        "tools": [{"name": "weather", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "tool", "name": "weather"},
        "stream": True,
    }
    out = messages_to_chat.request(body, "gpt-4o-mini")
    assert out["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "t1",
                    "type": "function",
                    "function": {"name": "weather", "arguments": '{"c":1}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
        {"role": "user", "content": "thanks"},
    ]
    assert out["tool_choice"] == {"type": "function", "function": {"name": "weather"}}
    assert out["stream_options"] == {"include_usage": True}


def test_a_messages_field_openai_cannot_carry_is_refused_by_name() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [], "top_k": 3}
    with pytest.raises(UnsupportedField) as raised:
        messages_to_chat.request(body, "m")
    assert raised.value.field == "top_k"


def test_chat_chunks_become_a_messages_stream() -> None:
    stream = messages_to_chat.MessagesStream()

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "c1",
            "model": "g",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }

    events = stream.feed(chunk({"role": "assistant", "content": "Hel"}))
    events += stream.feed(chunk({"content": "lo"}))
    call = {"index": 0, "id": "call_1", "function": {"name": "weather", "arguments": '{"a"'}}
    events += stream.feed(chunk({"tool_calls": [call]}))
    events += stream.feed(chunk({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}))
    events += stream.feed(chunk({}, "tool_calls"))
    events += stream.feed(
        {"id": "c1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}
    )
    events += stream.finish()
    reader = SseReader()
    parsed = [(e.event, orjson.loads(e.data)) for e in reader.feed(b"".join(events))]
    assert [name for name, _ in parsed] == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert parsed[5][1]["content_block"]["type"] == "tool_use" and parsed[5][1]["index"] == 1
    assert parsed[9][1]["delta"]["stop_reason"] == "tool_use"
    assert parsed[9][1]["usage"] == {"input_tokens": 3, "output_tokens": 2}


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"role": "user", "content": "hi", "name": "ann"}, "messages[0].name"),
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "high"}}],
            },
            "messages[0].content[0].image_url.detail",
        ),
    ],
)
def test_a_chat_message_field_without_equivalent_is_refused(
    message: dict[str, Any], field: str
) -> None:
    with pytest.raises(UnsupportedField) as raised:
        chat_to_messages.request({"model": "m", "messages": [message]}, "m")
    assert raised.value.field == field


def test_a_strict_tool_is_refused_for_anthropic() -> None:
    tool = {"type": "function", "function": {**WEATHER["function"], "strict": True}}  # type: ignore[dict-item]
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [tool]}
    with pytest.raises(UnsupportedField) as raised:
        chat_to_messages.request(body, "m")
    assert raised.value.field == "tools[0].function.strict"


def test_messages_blocks_keep_only_what_chat_can_carry() -> None:
    cached = {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    out = messages_to_chat.request(
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [cached]}]}, "m"
    )
    assert out["messages"] == [{"role": "user", "content": "hi"}]  # the caching hint is not sent
    failed = {"type": "tool_result", "tool_use_id": "t1", "content": "boom", "is_error": True}
    with pytest.raises(UnsupportedField) as raised:
        messages_to_chat.request(
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [failed]}]},
            "m",
        )
    assert raised.value.field == "messages[0].content[0].is_error"
