"""Client-key budgets: token buckets (unit, with a clock the test moves) and 429 + Retry-After
through the gateway, tokens read from the providers' usage (local stand-ins for the hosted APIs,
tests/fixtures/llm_providers.py), relayed or translated, streamed or not."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from agentgw.buckets import Budgets
from tests.fixtures.llm_gateway import CLIENT_KEY, DEFAULT_BACKEND, LlmGateway, StartLlm


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_refill_continuously() -> None:
    clock = Clock()
    budgets = Budgets(clock)
    assert [budgets.admit("k", 2, None) for _ in range(2)] == [0.0, 0.0]
    assert budgets.admit("k", 2, None) == pytest.approx(30.0)  # one request every 30 s
    clock.now += 30
    assert budgets.admit("k", 2, None) == 0.0


def test_tokens_are_charged_after_the_answer_and_may_overdraw() -> None:
    clock = Clock()
    budgets = Budgets(clock)
    assert budgets.admit("k", None, 60) == 0.0
    budgets.charge("k", 60, 90)  # the answer used more than what was left
    assert budgets.admit("k", None, 60) == pytest.approx(31.0)  # back to one whole token
    clock.now += 30
    assert budgets.admit("k", None, 60) == pytest.approx(1.0)
    clock.now += 1
    assert budgets.admit("k", None, 60) == 0.0
    assert budgets.admit("other", None, 60) == 0.0  # keys do not share buckets


def keyed(budgets: str) -> str:
    return (
        DEFAULT_BACKEND
        + f"keys:\n- {{secretRef: {{name: team-a-key, key: key}}, team: a, budgets: {budgets}}}\n"
    )


async def post(gateway: LlmGateway, path: str, body: dict[str, object]) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{gateway.base}{path}", json=body, headers={"x-api-key": CLIENT_KEY}
        )


async def test_a_spent_request_budget_is_429_with_retry_after(start_llm: StartLlm) -> None:
    gateway = await start_llm(keyed("{requestsPerMinute: 2}"))
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key=CLIENT_KEY, max_retries=0)
    for _ in range(2):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    with pytest.raises(openai.RateLimitError) as raised:
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 30
    assert "team a" in str(raised.value)
    assert len(gateway.openai.requests) == 2


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (  # relayed stream: usage from the last chunk
            "/v1/chat/completions",
            {"model": "gpt-4o-mini", "stream": True, "stream_options": {"include_usage": True}},
        ),
        # relayed stream, the client not asking for usage: the gateway asks for it
        ("/v1/chat/completions", {"model": "gpt-4o-mini", "stream": True}),
        ("/v1/messages", {"model": "claude-x", "stream": True, "max_tokens": 9}),  # relayed
        ("/v1/chat/completions", {"model": "claude-x"}),  # translated, whole
        ("/v1/messages", {"model": "gpt-4o-mini", "stream": True, "max_tokens": 9}),  # translated
    ],
)
async def test_a_spent_token_budget_is_429(
    start_llm: StartLlm, path: str, body: dict[str, object]
) -> None:
    # Each answer uses 18 tokens (the stand-ins' usage): 20 a minute allows two, then none.
    gateway = await start_llm(keyed("{tokensPerMinute: 20}"))
    body = {**body, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(2):
        answer = await post(gateway, path, body)
        assert answer.status_code == 200, answer.text
    refused = await post(gateway, path, body)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    if path == "/v1/messages":
        assert refused.json()["error"]["type"] == "rate_limit_error"
    assert len(gateway.openai.requests) + len(gateway.anthropic.requests) == 2


async def test_the_anthropic_sdk_sees_a_rate_limit_error(start_llm: StartLlm) -> None:
    gateway = await start_llm(keyed("{requestsPerMinute: 1}"))
    client = anthropic.AsyncAnthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0)
    messages = [{"role": "user", "content": "hi"}]
    await client.messages.create(model="claude-x", max_tokens=5, messages=messages)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError):
        await client.messages.create(model="claude-x", max_tokens=5, messages=messages)  # type: ignore[arg-type]


async def test_a_stream_is_asked_for_its_usage_which_the_client_that_did_not_ask_never_sees(
    start_llm: StartLlm,
) -> None:
    gateway = await start_llm(keyed("{tokensPerMinute: 20}"))
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key=CLIENT_KEY, max_retries=0)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
    )
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert all(c.choices and c.usage is None for c in chunks)  # no usage chunk reached it
    (sent,) = gateway.openai.requests
    assert sent.json["stream_options"] == {"include_usage": True}
    # Its 18 tokens were counted: 2 of 20 a minute are left, enough for one more answer only.
    assert (await post(gateway, "/v1/chat/completions", {"model": "gpt-4o-mini"})).is_success
    refused = await post(gateway, "/v1/chat/completions", {"model": "gpt-4o-mini"})
    assert refused.status_code == 429
