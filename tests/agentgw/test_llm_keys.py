"""Client API keys (from Secrets) and provider keys: 401 in the client's format for a missing or
unknown key, and no key, the client's or a provider's, in a response or the gateway's log. The
providers are local stand-ins for the hosted APIs (tests/fixtures/llm_providers.py)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.fixtures.llm_gateway import (
    ANTHROPIC_KEY,
    CLIENT_KEY,
    DEFAULT_BACKEND,
    OPENAI_KEY,
    LlmGateway,
    StartLlm,
)

KEYED = DEFAULT_BACKEND + "keys:\n- {secretRef: {name: team-a-key, key: key}, team: a}\n"


async def start(start_llm: StartLlm) -> LlmGateway:
    return await start_llm(KEYED)


async def test_a_valid_client_key_is_accepted_in_both_formats(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    completion = await openai.AsyncOpenAI(
        base_url=f"{gateway.base}/v1", api_key=CLIENT_KEY, max_retries=0
    ).chat.completions.create(model="claude-x", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "Hello from the stand-in"
    message = await anthropic.AsyncAnthropic(
        base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0
    ).messages.create(
        model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text"
    # The provider saw its own key, never the client's.
    assert gateway.anthropic.requests[0].headers["x-api-key"] == ANTHROPIC_KEY
    assert gateway.openai.requests[0].headers["authorization"] == f"Bearer {OPENAI_KEY}"
    for seen in gateway.anthropic.requests + gateway.openai.requests:
        assert CLIENT_KEY not in str(seen.headers)


@pytest.mark.parametrize("key", ["wrong-key", CLIENT_KEY + "x", CLIENT_KEY[:-1]])
async def test_an_unknown_key_is_401_in_the_clients_format(start_llm: StartLlm, key: str) -> None:
    gateway = await start(start_llm)
    with pytest.raises(openai.AuthenticationError) as raised:
        await openai.AsyncOpenAI(
            base_url=f"{gateway.base}/v1", api_key=key, max_retries=0
        ).chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
    assert raised.value.status_code == 401
    with pytest.raises(anthropic.AuthenticationError) as denied:
        await anthropic.AsyncAnthropic(
            base_url=gateway.base, api_key=key, max_retries=0
        ).messages.create(
            model="claude-x", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert denied.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert not gateway.openai.requests and not gateway.anthropic.requests


async def test_a_missing_key_is_401_naming_the_header(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    async with httpx.AsyncClient(timeout=10) as http:
        chat = await http.post(
            f"{gateway.base}/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        models = await http.get(f"{gateway.base}/v1/models")
        messages = await http.post(
            f"{gateway.base}/v1/messages",
            json={"model": "claude-x", "max_tokens": 5, "messages": []},
        )
    assert chat.status_code == models.status_code == messages.status_code == 401
    assert "Authorization" in chat.json()["error"]["message"]
    assert "x-api-key" in messages.json()["error"]["message"]


async def test_no_key_reaches_a_response_or_the_log(start_llm: StartLlm) -> None:
    gateway = await start(start_llm)
    gateway.openai.faults.append((500, {}))
    responses: list[str] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for model, path, body in [
            ("gpt-4o-mini", "/v1/chat/completions", {"stream": True}),
            ("gpt-4o-mini", "/v1/chat/completions", {}),
            ("claude-x", "/v1/messages", {"stream": True, "max_tokens": 5}),
            ("gpt-4o-mini", "/v1/messages", {"max_tokens": 5}),
        ]:
            answer = await http.post(
                f"{gateway.base}{path}",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}], **body},
                headers={"authorization": f"Bearer {CLIENT_KEY}"},
            )
            responses.append(str(answer.headers) + answer.text)
        responses.append(
            (await http.get(f"{gateway.base}/v1/models", headers={"x-api-key": CLIENT_KEY})).text
        )
        dump = await http.get(f"http://127.0.0.1:{gateway.admin_port}/config_dump")
        responses.append(dump.text)
    assert "LLMBackend" in dump.text
    text = "\n".join(responses) + gateway.log_text()
    assert "test.llm.access" in {r.name for r in gateway.caplog.records}
    for secret in (OPENAI_KEY, ANTHROPIC_KEY, CLIENT_KEY):
        assert secret not in text
