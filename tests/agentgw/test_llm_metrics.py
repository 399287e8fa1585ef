"""LLMBackend metrics on the admin API's /metrics: calls by status, tokens from the providers'
usage (read from compressed relays too), and the GenAI client duration histogram. The providers
are local stand-ins for the hosted APIs (tests/fixtures/llm_providers.py)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.llm_gateway import DEFAULT_BACKEND, StartLlm


async def test_calls_tokens_and_durations_are_counted(start_llm: StartLlm) -> None:
    priced = "price: {inputPerMillion: 0.15, outputPerMillion: 0.6}"
    gateway = await start_llm(
        DEFAULT_BACKEND.replace("provider: openai}", f"provider: openai, {priced}}}", 1)
    )
    hi = [{"role": "user", "content": "hi"}]
    async with httpx.AsyncClient(timeout=10) as http:
        # Relayed, gzip-compressed: usage is read through the compression.
        whole = await http.post(
            f"{gateway.base}/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": hi}
        )
        assert whole.headers["content-encoding"] == "gzip"
        await http.post(  # translated stream
            f"{gateway.base}/v1/chat/completions",
            json={"model": "claude-x", "messages": hi, "stream": True},
        )
        gateway.anthropic.faults.append((529, {}))
        failed = await http.post(
            f"{gateway.base}/v1/messages",
            json={"model": "claude-x", "messages": hi, "max_tokens": 5},
        )
        assert failed.status_code == 529
        text = (await http.get(f"http://127.0.0.1:{gateway.admin_port}/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    calls = {
        (s.labels["provider"], s.labels["model"], s.labels["code"]): s.value
        for s in families["ambient_llm_requests"].samples
    }
    assert calls == {
        ("openai", "gpt-4o-mini", "200"): 1,
        ("claude", "claude-x", "200"): 1,
        ("claude", "claude-x", "529"): 1,
    }
    tokens = {
        (s.labels["provider"], s.labels["gen_ai_token_type"]): s.value
        for s in families["ambient_llm_tokens"].samples
    }
    assert tokens == {
        ("openai", "input"): 11,
        ("openai", "output"): 7,
        ("claude", "input"): 11,
        ("claude", "output"): 7,
    }
    counts = {
        (s.labels["gen_ai_provider_name"], s.labels["gen_ai_operation_name"]): s.value
        for s in families["gen_ai_client_operation_duration_seconds"].samples
        if s.name.endswith("_count")
    }
    assert counts == {("openai", "chat"): 1, ("anthropic", "chat"): 1}
    # The GenAI families the inference extension also writes: time to first token for the
    # stream only, token usage for both whole answers.
    ttft = [
        s
        for s in families["gen_ai_server_time_to_first_token_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert [(s.labels["gen_ai_provider_name"], s.value) for s in ttft] == [("anthropic", 1)]
    assert ttft[0].labels["gen_ai_response_model"] == "claude-x"
    usage = {
        (s.labels["gen_ai_provider_name"], s.labels["gen_ai_token_type"]): s.value
        for s in families["gen_ai_client_token_usage"].samples
        if s.name.endswith("_sum")
    }
    assert usage == {
        ("openai", "input"): 11,
        ("openai", "output"): 7,
        ("anthropic", "input"): 11,
        ("anthropic", "output"): 7,
    }
    # Only the priced model costs: 11 input and 7 output tokens.
    (cost,) = families["ambient_llm_cost_usd"].samples
    assert cost.labels["model"] == "gpt-4o-mini"
    assert abs(cost.value - (11 * 0.15 + 7 * 0.6) / 1e6) < 1e-12
