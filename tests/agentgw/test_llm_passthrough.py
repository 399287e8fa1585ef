"""LLMBackend, same format both sides: the OpenAI SDK to an OpenAI provider, the Anthropic SDK to
an Anthropic provider, through the gateway on loopback; the providers are local stand-ins for the
hosted APIs (tests/fixtures/llm_providers.py)."""

from __future__ import annotations

import anthropic
import httpx
import openai
import pytest

from tests.fixtures.llm_gateway import ANTHROPIC_KEY, OPENAI_KEY, StartLlm


def openai_client(base: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="client-key", max_retries=0)


def anthropic_client(base: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(base_url=base, api_key="client-key", max_retries=0)


async def test_models_lists_the_configured_models(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    models = await openai_client(gateway.base).models.list()
    assert [m.id for m in models.data] == ["gpt-4o-mini", "llama"]
    listed = await anthropic_client(gateway.base).models.list()
    assert [m.id for m in listed.data] == ["gpt-4o-mini", "llama"]
    assert listed.data[0].type == "model"


async def test_the_body_goes_out_byte_for_byte_but_the_model_and_the_key(
    start_llm: StartLlm,
) -> None:
    gateway = await start_llm()
    body = b'{ "model" :"llama",\n "messages": [{"role":"user","content":"hi","model":"x"}] }'
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{gateway.base}/v1/chat/completions",
            content=body,
            headers={"authorization": "Bearer client-key", "content-type": "application/json"},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "Hello from the stand-in"
    # Relayed as the provider compressed it for the encodings this client accepts.
    assert answer.headers["content-encoding"] == "gzip"
    (seen,) = gateway.openai.requests
    assert seen.body == body.replace(b'"llama"', b'"llama-3-8b"', 1)
    assert seen.headers["authorization"] == f"Bearer {OPENAI_KEY}"
    assert "client-key" not in str(seen.headers)


async def test_openai_sdk_streams_with_usage(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    client = openai_client(gateway.base)
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hello"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    text, usage = [], None
    async for chunk in stream:
        if chunk.choices:
            text.append(chunk.choices[0].delta.content or "")
        if chunk.usage:
            usage = chunk.usage
    assert "".join(text) == "Hello from the stand-in"
    assert usage is not None and usage.total_tokens == 18


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
async def test_a_stream_reaches_the_client_before_the_provider_finished(
    start_llm: StartLlm, kind: str
) -> None:
    import asyncio

    gateway = await start_llm()
    stand_in = gateway.openai if kind == "openai" else gateway.anthropic
    stand_in.gate = asyncio.Event()
    if kind == "openai":
        stream = await openai_client(gateway.base).chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                break
    else:
        async with anthropic_client(gateway.base).messages.stream(
            model="claude-x", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as events:
            async for event in events:
                if event.type == "text":
                    break
    # The provider is still held after its first piece: the gateway forwarded it unbuffered.
    assert not stand_in.gate.is_set()
    stand_in.gate.set()


async def test_anthropic_sdk_reaches_the_anthropic_provider_through_a_wildcard(
    start_llm: StartLlm,
) -> None:
    gateway = await start_llm()
    client = anthropic_client(gateway.base)
    message = await client.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "hello"}],
    )
    assert message.content[0].type == "text"
    assert message.content[0].text == "Hello from the stand-in"
    (seen,) = gateway.anthropic.requests
    assert seen.json["model"] == "claude-sonnet-4-5"
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert seen.headers["anthropic-version"]  # the client's, forwarded
    assert "authorization" not in seen.headers


async def test_anthropic_sdk_streams(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    async with anthropic_client(gateway.base).messages.stream(
        model="claude-haiku", max_tokens=64, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        text = [t async for t in stream.text_stream]
        final = await stream.get_final_message()
    assert "".join(text) == "Hello from the stand-in"
    assert final.stop_reason == "end_turn" and final.usage.output_tokens == 7


async def test_an_unknown_model_is_404_in_the_clients_format(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    with pytest.raises(openai.NotFoundError) as raised:
        await openai_client(gateway.base).chat.completions.create(
            model="gpt-5-nano", messages=[{"role": "user", "content": "hi"}]
        )
    assert "gpt-5-nano" in str(raised.value)
    with pytest.raises(anthropic.NotFoundError) as denied:
        await anthropic_client(gateway.base).messages.create(
            model="mistral", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert denied.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    assert "mistral" in str(denied.value)
    assert not gateway.openai.requests and not gateway.anthropic.requests


async def test_a_body_without_model_is_400_naming_the_field(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    async with httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(f"{gateway.base}/v1/chat/completions", json={"messages": []})
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "model"
    assert "model" in answer.json()["error"]["message"]


async def test_completions_and_embeddings_reach_an_openai_provider(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    client = openai_client(gateway.base)
    completion = await client.completions.create(model="llama", prompt="Say hi")
    assert completion.choices[0].text == "Hello from the stand-in"
    embeddings = await client.embeddings.create(model="gpt-4o-mini", input=["a", "bb"])
    assert [e.embedding[2] for e in embeddings.data] == [1.0, 2.0]
    assert [r.json["model"] for r in gateway.openai.requests] == ["llama-3-8b", "gpt-4o-mini"]
    with pytest.raises(openai.BadRequestError) as raised:
        await client.embeddings.create(model="claude-x", input="a")
    assert "claude-x" in str(raised.value) and "/v1/embeddings" in str(raised.value)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-x"])  # relayed, translated
async def test_a_client_that_leaves_mid_stream_releases_the_provider_call(
    start_llm: StartLlm, model: str
) -> None:
    import asyncio

    gateway = await start_llm()
    stand_in = gateway.openai if model == "gpt-4o-mini" else gateway.anthropic
    stand_in.gate = asyncio.Event()  # held after the first piece, until the caller leaves
    body = {"model": model, "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    async with (
        httpx.AsyncClient(timeout=10) as http,
        http.stream("POST", f"{gateway.base}/v1/chat/completions", json=body) as answer,
    ):
        async for chunk in answer.aiter_text():
            if "Hello" in chunk:
                break
    # The client closed its connection: the gateway closes its call to the provider.
    await asyncio.wait_for(stand_in.left.wait(), 10)


async def test_an_http2_client_streams_through_the_gateway(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    body = {
        "model": "claude-x",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hi"}],
    }
    async with (
        httpx.AsyncClient(http1=False, http2=True, timeout=10) as http,  # h2c, prior knowledge
        http.stream("POST", f"{gateway.base}/v1/chat/completions", json=body) as answer,
    ):
        assert answer.http_version == "HTTP/2"
        lines = [line async for line in answer.aiter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert '"total_tokens":18' in lines[-2]


async def test_a_reload_changes_the_models_and_keeps_provider_state(start_llm: StartLlm) -> None:
    gateway = await start_llm()
    gateway.openai.faults.append((429, {"retry-after": "60"}))
    client = openai_client(gateway.base)
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    await gateway.reload("- {name: llama,", "- {name: llama-renamed,")
    assert [m.id for m in (await client.models.list()).data] == ["gpt-4o-mini", "llama-renamed"]
    # The provider's back-off outlived the reload: no second call reached it.
    with pytest.raises(openai.InternalServerError) as raised:
        await client.chat.completions.create(
            model="llama-renamed", messages=[{"role": "user", "content": "hi"}]
        )
    assert raised.value.status_code == 503
    assert len(gateway.openai.requests) == 1
