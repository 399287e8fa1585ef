"""Virtual models: weighted splits and failover groups (429, 5xx, connect failure, first-byte
timeout), Retry-After back-off, outlier ejection, and a stream that breaks after it started. The
providers are local stand-ins for the hosted APIs (tests/fixtures/llm_providers.py)."""

from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from tests.fixtures.gateway_process import free_port
from tests.fixtures.llm_gateway import LlmGateway, StartLlm

BACKEND = """
providers:
- {name: openai, type: OpenAI, url: "{openai}", timeoutSeconds: 0.5}
- {name: claude, type: Anthropic, url: "{anthropic}"}
- {name: down, type: OpenAI, url: "http://127.0.0.1:%d/v1"}
models:
- {name: gpt-4o-mini, provider: openai}
- {name: "claude-*", provider: claude}
- {name: nowhere, provider: down}
virtualModels:
- {name: smart, weighted: [{model: gpt-4o-mini, weight: 80}, {model: claude-sonnet, weight: 20}]}
- {name: reliable, failover: [[gpt-4o-mini], [claude-haiku]]}
- {name: steady, failover: [[nowhere], [claude-haiku]]}
- {name: backed, weighted: [{model: gpt-4o-mini, weight: 1}, {model: claude-spare, weight: 0}]}
"""


async def start(start_llm: StartLlm) -> LlmGateway:
    return await start_llm(BACKEND % free_port())  # nothing listens on the "down" provider


async def chat(gateway: LlmGateway, model: str, **extra: object) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10) as http:
        return await http.post(
            f"{gateway.base}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra},
        )


async def test_a_weighted_model_splits_by_weight(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key="k", max_retries=0)
    n = 200
    for _ in range(n):
        await client.chat.completions.create(
            model="smart", messages=[{"role": "user", "content": "hi"}]
        )
    share = len(gateway.openai.requests) / n
    # 80 % expected; 4.5 standard deviations of a binomial(200, 0.8) is 0.127.
    assert abs(share - 0.8) < 0.127, share
    assert len(gateway.openai.requests) + len(gateway.anthropic.requests) == n


@pytest.mark.parametrize("status", [429, 500, 503])
async def test_failover_moves_to_the_next_group(start_llm: StartLlm, status: int) -> None:
    gateway = await start(start_llm)
    gateway.openai.faults.append((status, {}))
    answer = await chat(gateway, "reliable")
    assert answer.status_code == 200, answer.text
    assert len(gateway.openai.requests) == 1 and len(gateway.anthropic.requests) == 1
    assert gateway.anthropic.requests[0].json["model"] == "claude-haiku"


async def test_a_connect_failure_fails_over(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    answer = await chat(gateway, "steady")
    assert answer.status_code == 200, answer.text
    assert len(gateway.anthropic.requests) == 1


async def test_a_first_byte_timeout_fails_over(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    gateway.openai.stall = asyncio.Event()  # the OpenAI stand-in never answers (timeout 0.5 s)
    try:
        answer = await chat(gateway, "reliable")
    finally:
        gateway.openai.stall.set()
    assert answer.status_code == 200, answer.text
    assert len(gateway.anthropic.requests) == 1


async def test_retry_after_puts_a_provider_in_back_off(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    gateway.openai.faults.append((429, {"retry-after": "30"}))
    assert (await chat(gateway, "reliable")).status_code == 200
    assert (await chat(gateway, "reliable")).status_code == 200
    # The second request skipped the provider in back-off.
    assert len(gateway.openai.requests) == 1 and len(gateway.anthropic.requests) == 2


async def test_the_last_failure_reaches_the_client_with_retry_after(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    gateway.openai.faults.append((429, {"retry-after": "7"}))
    answer = await chat(gateway, "gpt-4o-mini")
    assert answer.status_code == 429
    assert answer.headers["retry-after"] == "7"
    assert answer.json()["error"]["type"] == "rate_limit_exceeded"
    # Backing off: the next request is refused without calling the provider.
    again = await chat(gateway, "gpt-4o-mini")
    assert again.status_code == 503 and "backing off" in again.json()["error"]["message"]
    assert len(gateway.openai.requests) == 1


async def test_consecutive_failures_eject_a_provider(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    gateway.openai.faults.extend([(500, {})] * 5)
    for _ in range(5):
        assert (await chat(gateway, "reliable")).status_code == 200
    # Three failures in a row ejected it: the last two requests went straight to the next group.
    assert len(gateway.openai.requests) == 3
    assert len(gateway.anthropic.requests) == 5


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_stream_that_breaks_ends_with_an_error_event(
    start_llm: StartLlm, path: str
) -> None:
    gateway = await start(start_llm)
    gateway.openai.cut = gateway.anthropic.cut = True
    body = {
        "model": "reliable",
        "max_tokens": 20,
        "stream": True,
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{gateway.base}{path}", json=body)
    assert answer.status_code == 200
    text = answer.text
    assert "Hello" in text  # the first piece got through before the cut
    if path == "/v1/messages":
        assert "event: error" in text and '"type":"error"' in text
    else:
        assert '"error"' in text.rsplit("data: ", 1)[-1]
    # No failover once bytes reached the client.
    assert len(gateway.anthropic.requests) == 0


async def test_a_weighted_model_fails_over_to_its_other_members(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    assert (await chat(gateway, "backed")).status_code == 200
    assert len(gateway.openai.requests) == 1 and not gateway.anthropic.requests  # weight 0
    gateway.openai.faults.append((503, {}))
    assert (await chat(gateway, "backed")).status_code == 200
    assert gateway.anthropic.requests[0].json["model"] == "claude-spare"
