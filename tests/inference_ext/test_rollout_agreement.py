"""Answer agreement: reading answers, comparing them, the model splice, counts, and a canary
simulator mirrored to over loopback next to a stable one."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import orjson
import pytest

from inference_ext.rollout.agreement import (
    AgreementCounters,
    AgreementStats,
    AnswerError,
    AnswerReader,
    Comparison,
    _with_model,
    answer_text,
    compare_with_canary,
    merge_views,
    similarity,
    stats_since,
)
from inference_ext.sim.server import SimServer
from tests.fixtures.sim import SimFactory, sim_factory

__all__ = ["sim_factory"]  # the fixture

PROMPTS = [f"question {i}: what should the canary say?" for i in range(40)]
EXACT = Comparison("exact")
SIMILAR = Comparison("similarity", 0.9)


def sse(*documents: Any, done: bool = True) -> bytes:
    """An event stream of JSON documents, ending in ``data: [DONE]``."""
    events = [b"data: " + orjson.dumps(d) + b"\n\n" for d in documents]
    return b"".join(events) + (b"data: [DONE]\n\n" if done else b"")


def delta(**fields: Any) -> dict[str, Any]:
    """A chat chunk with one delta."""
    return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": fields}]}


def read(body: bytes, size: int | None = None) -> str:
    """The answer's text, the body fed in pieces of ``size`` bytes (whole if None)."""
    reader = AnswerReader()
    step = size or len(body) or 1
    for at in range(0, len(body), step):
        reader.feed(body[at : at + step])
    return reader.text()


def test_a_streamed_chat_answer_cut_anywhere_reads_as_its_content() -> None:
    body = sse(
        delta(role="assistant", content=""),
        delta(content="Grüße, "),
        delta(content="wörld 🙂"),
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"completion_tokens": 2}},  # stream_options.include_usage
    )
    assert read(body) == "Grüße, wörld 🙂"
    assert read(body, 1) == "Grüße, wörld 🙂"  # every character cut by a chunk boundary
    assert read(b"\r\n" + body.replace(b"\n", b"\r\n"), 7) == "Grüße, wörld 🙂"


def test_a_tool_call_reads_the_same_streamed_or_whole() -> None:
    call = {"index": 0, "id": "call_1", "type": "function"}
    streamed = sse(
        delta(role="assistant", content=None, tool_calls=[{**call, "function": {"name": "get"}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": '{"city":'}}]),
        delta(tool_calls=[{"index": 0, "function": {"arguments": ' "Oslo"}'}}]),
    )
    message = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {"id": "call_1", "function": {"name": "get", "arguments": '{"city": "Oslo"}'}}
        ],
    }
    whole = orjson.dumps(
        {"object": "chat.completion", "choices": [{"index": 0, "message": message}]}
    )
    assert read(streamed, 5) == read(whole, 5) == '\nget {"city": "Oslo"}'


def test_completions_read_the_same_streamed_or_whole() -> None:
    streamed = sse(*({"choices": [{"index": 0, "text": word}]} for word in ("Once", " upon")))
    whole = b'  {"object": "text_completion", "choices": [{"index": 0, "text": "Once upon"}]}'
    assert read(streamed) == read(whole, 3) == "Once upon"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b'{"error": {"message": "The model `x` does not exist."}}', "not a completion"),
        (b'{"choices": []}', "no choice 0"),
        (b"{not json", "not JSON"),
        (sse(delta(content="cut"), done=False), r"event stream ended without data: \[DONE\]"),
        (b"data: {\n\n", "not JSON"),
        (b" \r\n", "empty body"),
    ],
)
def test_what_is_not_an_answer_says_why(body: bytes, why: str) -> None:
    with pytest.raises(AnswerError, match=why):
        read(body)
    assert answer_text(body) is None


def test_an_answer_over_the_limit_is_refused() -> None:
    reader = AnswerReader(max_bytes=10)
    reader.feed(b'{"choices"')
    with pytest.raises(AnswerError, match="answer body over 10 bytes"):
        reader.feed(b":")


def test_exact_trims_and_similarity_normalizes_then_scores_word_pairs() -> None:
    assert EXACT.agree("  The answer.\n", "The answer.")
    assert not EXACT.agree("The answer.", "the answer.")
    assert similarity("The  answer, IS 42!", "the answer is 42") == 1.0
    ten = "one two three four five six seven eight nine ten"
    assert similarity(ten, ten.replace("five", "5")) == pytest.approx(2 * 7 / 18)  # 2 pairs lost
    assert similarity(ten, " ".join(reversed(ten.split()))) == 0.0  # same words, other order
    assert similarity("yes", "Yes.") == 1.0 and similarity("yes", "no") == 0.0  # single words
    assert similarity("", "  ") == 1.0 and similarity("", "something else") == 0.0
    long = " ".join(f"w{i}" for i in range(100))
    assert SIMILAR.agree(long, long.replace("w50", "x"))  # 1 word in 100: 0.98
    assert not SIMILAR.agree(long, long.replace("w5", "x"))  # 11 words: below 0.9
    with pytest.raises(ValueError, match="mode: expected 'exact' or 'similarity'"):
        Comparison("fuzzy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"threshold: expected a fraction in \[0, 1\]"):
        Comparison("similarity", 1.5)


def test_only_the_top_level_model_value_is_rewritten() -> None:
    body = (
        b'{ "messages": [{"role": "user", "content": "say \\"model\\": \\"x\\""}],\n'
        b'  "tools": [{"function": {"parameters": {"model": "keep"}}}],\n'
        b'  "model"  :  "stable-v1", "stream": true }'
    )
    rewritten = _with_model(body, "canary-v2")
    assert rewritten == body.replace(b'"stable-v1"', b'"canary-v2"')
    assert orjson.loads(rewritten or b"")["tools"][0]["function"]["parameters"]["model"] == "keep"
    assert _with_model(b'{"model": "a", "model": "b"}', "c") == b'{"model": "c", "model": "c"}'
    assert _with_model(b'{"model": "a\\"b"}', 'new"one') == b'{"model": "new\\"one"}'
    for no_model in (b'{"prompt": "model"}', b'{"model": 3}', b"[1]", b"{not json", b""):
        assert _with_model(no_model, "c") is None


def test_counts_are_bounded_per_interval_and_merge_across_processes() -> None:
    stats = AgreementStats()
    assert stats.share is None
    for result in (True, True, False, None):
        stats.add(result)
    assert (stats.agree, stats.total, stats.share) == (2, 3, pytest.approx(2 / 3))

    worker_a, worker_b = AgreementCounters(interval=10, keep=3), AgreementCounters(interval=10)
    for second in range(0, 50, 5):  # intervals 0, 10, 20, 30, 40: worker a keeps the last 3
        worker_a.add("default/chat", 1000 + second, second % 10 == 0)
    worker_b.add("default/chat", 1045, True)
    worker_b.add("other/x", 1001, False)
    assert worker_a.view() == {"default/chat": {"1020": [1, 2], "1030": [1, 2], "1040": [1, 2]}}
    merged = merge_views([worker_a.view(), worker_b.view()])
    assert merged == {
        "default/chat": {"1020": [1, 2], "1030": [1, 2], "1040": [2, 3]},
        "other/x": {"1000": [0, 1]},
    }
    since = stats_since(merged, "default/chat", 1030)
    assert (since.agree, since.total) == (3, 5)
    assert stats_since(merged, "missing", 0).share is None


Send = Callable[[bytes], Awaitable[bytes]]


def sender(server: SimServer, client: httpx.AsyncClient) -> Send:
    """``send`` to a simulator: the body of a 200 answer, an exception for anything else."""

    async def send(body: bytes) -> bytes:
        response = await client.post(
            f"{server.url}/v1/chat/completions",
            content=body,
            headers={"content-type": "application/json"},
        )
        response.raise_for_status()
        return response.content

    return send


def chat(prompt: str, model: str, stream: bool) -> bytes:
    """A chat completion request body."""
    return orjson.dumps(
        {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
    )


async def mirror_all(
    stable: SimServer, canary: SimServer, comparison: Comparison, stream: bool
) -> list[bool | None]:
    """Each prompt answered by stable (as the user's request) and mirrored to the canary."""
    async with httpx.AsyncClient(timeout=10) as client:
        to_stable, to_canary = sender(stable, client), sender(canary, client)

        async def one(prompt: str) -> bool | None:
            body = chat(prompt, "chat-v1", stream)
            answer = await to_stable(body)
            if stream:  # read as a response tap would, while it streamed to the user
                reader = AnswerReader()
                for at in range(0, len(answer), 100):
                    reader.feed(answer[at : at + 100])
                text = reader.text()
                return await compare_with_canary(to_canary, body, "chat-v2", text, comparison)
            return await compare_with_canary(to_canary, body, "chat-v2", answer, comparison)

        return list(await asyncio.gather(*map(one, PROMPTS)))


@pytest.fixture
async def stable(sim_factory: SimFactory) -> SimServer:
    """The stable model server: ``chat-v1``."""
    (server,) = await sim_factory(model="chat-v1", output_tokens=(8, 24))
    return server


@pytest.mark.parametrize("stream", [True, False])
async def test_a_canary_answering_as_stable_agrees_on_every_mirrored_request(
    stable: SimServer, sim_factory: SimFactory, stream: bool
) -> None:
    # The canary serves only chat-v2: without the model rewrite it would answer 404.
    (canary,) = await sim_factory(model="chat-v2", output_tokens=(8, 24), answers_of="chat-v1")
    assert await mirror_all(stable, canary, EXACT, stream) == [True] * len(PROMPTS)
    assert await mirror_all(stable, canary, SIMILAR, stream) == [True] * len(PROMPTS)


async def test_a_canary_varying_half_its_answers_has_about_half_agreement(
    stable: SimServer, sim_factory: SimFactory
) -> None:
    (canary,) = await sim_factory(
        model="chat-v2", output_tokens=(8, 24), answers_of="chat-v1", answer_variant=0.5
    )
    exact = await mirror_all(stable, canary, EXACT, stream=True)
    similar = await mirror_all(stable, canary, SIMILAR, stream=False)
    assert similar == exact  # a variant shares no word pair with stable's answer
    # Which prompts vary, asked of the canary directly: the mirrored verdicts say the same.
    async with httpx.AsyncClient(timeout=10) as client:
        to_stable, to_canary = sender(stable, client), sender(canary, client)
        stable_answers, canary_answers = await asyncio.gather(
            asyncio.gather(*(to_stable(chat(p, "chat-v1", False)) for p in PROMPTS)),
            asyncio.gather(*(to_canary(chat(p, "chat-v2", False)) for p in PROMPTS)),
        )
    same = [
        answer_text(a) == answer_text(b)
        for a, b in zip(stable_answers, canary_answers, strict=True)
    ]
    assert exact == same
    counters = [AgreementCounters(), AgreementCounters()]  # two workers, half the requests each
    for index, result in enumerate(exact):
        counters[index % 2].add("default/chat", 1_000_000.0, result)
    share = stats_since(merge_views(c.view() for c in counters), "default/chat", 0).share
    assert share is not None and 0.3 <= share <= 0.7
    assert share == sum(same) / len(PROMPTS)


async def test_a_failing_canary_disagrees_and_stable_failures_are_not_counted(
    stable: SimServer, sim_factory: SimFactory, free_port: int
) -> None:
    (erring,) = await sim_factory(model="chat-v2", error_rate=1.0, host="127.0.0.3")
    body = chat(PROMPTS[0], "chat-v1", False)
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await sender(stable, client)(body)
        assert (
            await compare_with_canary(sender(erring, client), body, "chat-v2", answer, EXACT)
            is False
        )

        async def refused(body: bytes) -> bytes:
            response = await client.post(f"http://127.0.0.1:{free_port}/", content=body)
            return response.content

        assert await compare_with_canary(refused, body, "chat-v2", answer, EXACT) is False

        never = asyncio.Event()

        async def hangs(body: bytes) -> bytes:
            await never.wait()
            return b""

        verdict = await compare_with_canary(hangs, body, "chat-v2", answer, EXACT, timeout=0.05)
        assert verdict is False

        async def not_an_answer(body: bytes) -> bytes:
            return b'{"error": {"message": "overloaded"}}'

        assert await compare_with_canary(not_an_answer, body, "chat-v2", answer, EXACT) is False

        async def unused(body: bytes) -> bytes:
            raise AssertionError("nothing to compare: the canary must not be asked")

        error = b'{"error": {"message": "stable failed"}}'
        assert await compare_with_canary(unused, body, "chat-v2", error, EXACT) is None
        no_model = b'{"messages": []}'
        assert await compare_with_canary(unused, no_model, "chat-v2", answer, EXACT) is None
