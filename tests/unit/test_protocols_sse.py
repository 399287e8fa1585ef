"""The SSE reader against the WHATWG rules for interpreting an event stream, chunked any way."""

from __future__ import annotations

import json
import random
from dataclasses import FrozenInstanceError

import pytest

from gateway.protocols.sse import SseError, SseEvent, SseReader


def read(*chunks: bytes, max_line: int = 1 << 20) -> list[SseEvent]:
    """Every event a fresh reader returns for ``chunks``, end of stream included."""
    reader = SseReader(max_line)
    events = [event for chunk in chunks for event in reader.feed(chunk)]
    return events + reader.close()


def chat_chunk(delta: dict[str, str], finish: str | None = None) -> str:
    """One OpenAI chat.completion.chunk payload, as the API serialises it."""
    body = {
        "id": "chatcmpl-9xZ3kQ",
        "object": "chat.completion.chunk",
        "created": 1718000000,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_0ba0d124f1",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


TOKENS = ["Hello", "!", " Un", " café", "?", " Sure", " 🙂", " Here", "\u2019s", " one", "."]
PAYLOADS = [
    chat_chunk({"role": "assistant", "content": ""}),
    *(chat_chunk({"content": token}) for token in TOKENS),
    chat_chunk({}, "stop"),
    "[DONE]",
]
OPENAI_STREAM = b"".join(b"data: " + payload.encode() + b"\n\n" for payload in PAYLOADS)
OPENAI_EVENTS = [SseEvent(payload) for payload in PAYLOADS]


# -- chunking never changes the events ---------------------------------------------------------


def test_openai_stream_fed_whole() -> None:
    assert read(OPENAI_STREAM) == OPENAI_EVENTS


def test_openai_stream_fed_byte_by_byte() -> None:
    chunks = [OPENAI_STREAM[i : i + 1] for i in range(len(OPENAI_STREAM))]
    assert read(*chunks) == OPENAI_EVENTS


def test_openai_stream_split_at_every_boundary() -> None:
    for cut in range(len(OPENAI_STREAM) + 1):
        assert read(OPENAI_STREAM[:cut], OPENAI_STREAM[cut:]) == OPENAI_EVENTS, cut


def test_openai_stream_in_seeded_random_chunks() -> None:
    rng = random.Random(20240607)
    for _ in range(200):
        chunks, at = [], 0
        while at < len(OPENAI_STREAM):
            size = rng.randint(1, 400)
            chunks.append(OPENAI_STREAM[at : at + size])
            at += size
        assert read(*chunks) == OPENAI_EVENTS


@pytest.mark.parametrize("newline", [b"\r\n", b"\r"], ids=["crlf", "cr"])
def test_openai_stream_with_other_line_ends_split_at_every_boundary(newline: bytes) -> None:
    stream = OPENAI_STREAM.replace(b"\n", newline)
    for cut in range(len(stream) + 1):
        assert read(stream[:cut], stream[cut:]) == OPENAI_EVENTS, cut


MIXED_STREAM = (
    "\ufeff: a comment\r\n"
    "retry: 2500\r\n"
    "id: 41\n"
    "event: delta\r"
    "data: first line\r\n"
    "data:second line é\n"
    "\n"
    "data\n"
    "\r\n"
    "id: 42\n"
    "\n"
    "data: ∑ 🙂\r"
    "\r"
).encode()
MIXED_EVENTS = [
    SseEvent("first line\nsecond line é", "delta", "41", 2500),
    SseEvent("", "message", "41", None),
    SseEvent("∑ 🙂", "message", "42", None),
]


def test_every_rule_together_split_at_every_pair_of_boundaries() -> None:
    assert read(MIXED_STREAM) == MIXED_EVENTS
    size = len(MIXED_STREAM)
    for first in range(size + 1):
        for second in range(first, size + 1):
            chunks = MIXED_STREAM[:first], MIXED_STREAM[first:second], MIXED_STREAM[second:]
            assert read(*chunks) == MIXED_EVENTS, (first, second)


# -- line ends ----------------------------------------------------------------------------------


def test_crlf_split_across_chunks_is_one_line_break() -> None:
    reader = SseReader()
    assert reader.feed(b"data: a\r") == []
    # Were the LF a line of its own, it would be a blank line dispatching "a" alone.
    assert reader.feed(b"\ndata: b\r\n") == []
    assert reader.feed(b"\r\n") == [SseEvent("a\nb")]


def test_cr_then_crlf_is_a_line_then_a_blank_line() -> None:
    assert read(b"data: a\r", b"\r\n") == [SseEvent("a")]


def test_cr_alone_ends_lines() -> None:
    assert read(b"data: a\rdata: b\r\rdata: c\r\r") == [SseEvent("a\nb"), SseEvent("c")]


def test_lf_after_cr_is_skipped_only_once() -> None:
    assert read(b"data: a\r", b"\n\n") == [SseEvent("a")]


# -- decoding -----------------------------------------------------------------------------------


def test_multibyte_character_split_across_chunks() -> None:
    stream = "data: é€🙂\n\n".encode()
    for cut in range(len(stream) + 1):
        assert read(stream[:cut], stream[cut:]) == [SseEvent("é€🙂")], cut


def test_invalid_utf8_is_replaced() -> None:
    assert read(b"data: \xff ok \xc0\xaf\n\n") == [SseEvent("\ufffd ok \ufffd\ufffd")]
    stream = b"data: \xff\n\nevent: \xfe\ndata: \xc0\n\n"
    assert read(stream) == [SseEvent("\ufffd"), SseEvent("\ufffd", "\ufffd")]


def test_truncated_sequence_before_a_line_break_is_one_replacement() -> None:
    assert read(b"data: \xe2\x82\n\n") == [SseEvent("\ufffd")]


def test_leading_bom_is_stripped() -> None:
    assert read(b"\xef\xbb\xbfdata: a\n\n") == [SseEvent("a")]


def test_leading_bom_split_across_chunks_is_stripped() -> None:
    assert read(b"\xef", b"\xbb", b"\xbfdata: a\n\n") == [SseEvent("a")]


def test_only_one_bom_is_stripped() -> None:
    # The second BOM starts the field name, so "\ufeffdata" is an unknown field.
    assert read(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n") == [SseEvent("b")]


def test_bom_after_the_start_is_not_stripped() -> None:
    assert read(b"data: a\n\n\xef\xbb\xbfdata: b\n\n") == [SseEvent("a")]


# -- lines and fields ---------------------------------------------------------------------------


def test_comment_lines_are_ignored() -> None:
    assert read(b": keep-alive\n:\ndata: a\n: inside\n\n") == [SseEvent("a")]


def test_field_without_colon_has_empty_value() -> None:
    assert read(b"data\n\n") == [SseEvent("")]


def test_only_one_leading_space_is_removed() -> None:
    assert read(b"data:  two\ndata:none\ndata: \n\n") == [SseEvent(" two\nnone\n")]


def test_data_lines_are_joined_with_lf() -> None:
    assert read(b"data: a\ndata: b\ndata: c\n\n") == [SseEvent("a\nb\nc")]


def test_empty_data_line_dispatches_empty_data() -> None:
    # The data buffer holds one LF, so it is not empty; the LF is then removed.
    assert read(b"data:\n\n") == [SseEvent("")]


def test_event_without_data_is_not_dispatched() -> None:
    assert read(b"event: ping\nid: 3\nretry: 10\n\n") == []


def test_event_type_resets_after_each_dispatch() -> None:
    stream = b"event: add\ndata: 1\n\ndata: 2\n\n"
    assert read(stream) == [SseEvent("1", "add"), SseEvent("2", "message")]


def test_event_type_resets_when_nothing_is_dispatched() -> None:
    assert read(b"event: ping\n\ndata: x\n\n") == [SseEvent("x", "message")]


def test_empty_event_type_is_message() -> None:
    assert read(b"event:\ndata: x\n\n") == [SseEvent("x", "message")]


def test_field_names_are_case_sensitive_and_unknown_fields_ignored() -> None:
    assert read(b"Data: a\nfoo: bar\ndata : b\n\n") == []
    assert read(b"foo: bar\ndata: c\n\n") == [SseEvent("c")]


def test_last_event_id_carries_over_and_an_empty_id_clears_it() -> None:
    stream = b"id: 1\ndata: a\n\ndata: b\n\nid\ndata: c\n\n"
    assert read(stream) == [SseEvent("a", id="1"), SseEvent("b", id="1"), SseEvent("c", id="")]


def test_id_containing_nul_is_ignored() -> None:
    assert read(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")[1] == SseEvent("b", id="1")


def test_event_begun_in_one_chunk_ends_in_the_next() -> None:
    reader = SseReader()
    assert reader.feed(b"event: add\ndata: 1\n") == []
    assert reader.feed(b"data: 2\n\n") == [SseEvent("1\n2", "add")]
    assert reader.feed(b"retry: 9\n") == []
    assert reader.feed(b"data: 3\n\n") == [SseEvent("3", retry=9)]


def test_reader_last_event_id_changes_at_blank_lines() -> None:
    reader = SseReader()
    reader.feed(b"id: 7\n")
    assert reader.last_event_id is None
    assert reader.feed(b"\n") == []
    assert reader.last_event_id == "7"
    reader.feed(b"id: 8\n")
    assert reader.last_event_id == "7"
    assert reader.feed(b"data: a\n\n") == [SseEvent("a", id="8")]
    assert reader.last_event_id == "8"
    reader.feed(b"id: 9\n")
    assert reader.feed(b"data: b\n\ndata: c\n\n") == [SseEvent("b", id="9"), SseEvent("c", id="9")]
    assert reader.last_event_id == "9"


def test_retry_sets_the_reconnection_time_and_the_blocks_event() -> None:
    reader = SseReader()
    reader.feed(b"retry: 3000\n")
    assert reader.retry == 3000
    assert reader.feed(b"data: a\n\ndata: b\n\n") == [SseEvent("a", retry=3000), SseEvent("b")]
    assert reader.retry == 3000


@pytest.mark.parametrize("value", ["", "30s", "-1", "+1", " 1", "1.5", "1_000", "\uff13", "\u00b2"])
def test_retry_other_than_ascii_digits_is_ignored(value: str) -> None:
    reader = SseReader()
    events = reader.feed(f"retry: 5\n\nretry: {value}\ndata: x\n\n".encode())
    assert events == [SseEvent("x")]
    assert reader.retry == 5


@pytest.mark.parametrize("value", ["18446744073709551616", "9" * 5000])
def test_retry_over_64_bits_is_ignored(value: str) -> None:
    reader = SseReader()
    events = reader.feed(f"retry: 5\nretry: {value}\ndata: x\n\n".encode())
    assert events == [SseEvent("x", retry=5)]
    assert reader.retry == 5


def test_retry_with_leading_zeros_up_to_64_bits() -> None:
    reader = SseReader()
    reader.feed(b"retry: " + b"0" * 5000 + b"7\n")
    assert reader.retry == 7
    reader.feed(b"retry: 18446744073709551615\n")
    assert reader.retry == 2**64 - 1


# -- end of stream, limits, the event type ------------------------------------------------------


def test_unterminated_event_at_end_of_stream_is_discarded() -> None:
    reader = SseReader()
    assert reader.feed(b"data: a\n\ndata: b\n") == [SseEvent("a")]
    assert reader.close() == []


def test_unterminated_line_at_end_of_stream_is_discarded() -> None:
    assert read(b"data: a\n\ndata: b") == [SseEvent("a")]


def test_feed_after_close_raises() -> None:
    reader = SseReader()
    reader.close()
    with pytest.raises(SseError, match="after close"):
        reader.feed(b"data: a\n\n")


def test_line_at_the_limit_is_read() -> None:
    line = b"data: " + b"x" * 10
    assert read(line + b"\n\n", max_line=len(line)) == [SseEvent("x" * 10)]


def test_complete_line_over_the_limit_raises() -> None:
    reader = SseReader(max_line=16)
    with pytest.raises(SseError, match="max_line=16"):
        reader.feed(b"data: 0123456789A\n\n")


def test_unterminated_line_over_the_limit_raises_before_its_end() -> None:
    reader = SseReader(max_line=16)
    reader.feed(b"data: 012345")
    with pytest.raises(SseError, match="max_line=16"):
        reader.feed(b"6789A")


def test_chunk_ending_in_a_line_over_the_limit_raises() -> None:
    reader = SseReader(max_line=16)
    with pytest.raises(SseError, match="max_line=16"):
        reader.feed(b"data: a\n\ndata: 0123456789A")


def test_line_over_the_limit_raises_whatever_the_chunking() -> None:
    stream = b"data: ok\n\ndata: 0123456789A\n\n"
    for cut in range(len(stream) + 1):
        reader = SseReader(max_line=16)
        with pytest.raises(SseError):
            reader.feed(stream[:cut])
            reader.feed(stream[cut:])


def test_reader_refuses_input_after_a_line_over_the_limit() -> None:
    reader = SseReader(max_line=4)
    with pytest.raises(SseError):
        reader.feed(b"data: long\n\n")
    with pytest.raises(SseError, match="max_line=4"):
        reader.feed(b"\n")


def test_sse_error_is_a_value_error() -> None:
    assert issubclass(SseError, ValueError)


def test_events_are_frozen_on_every_path() -> None:
    # One event from the "data: ..." fast path, one from the general path.
    for event in read(b"data: fast\n\nevent: x\ndata: slow\n\n"):
        with pytest.raises(FrozenInstanceError):
            event.data = "changed"  # type: ignore[misc]
