"""Cost from a price table shared through a ConfigMap: cached input priced apart from fresh
input, a cost series per team, key and model, and each answer's provider, models, tokens and
cost on its access-log line and its span (exported over OTLP to a stand-in collector; the key
itself never). The providers are local stand-ins for the hosted APIs
(tests/fixtures/llm_providers.py); the clients are the ``anthropic`` and ``openai`` SDKs."""

from __future__ import annotations

import json
import math

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.llm_gateway import CLIENT_KEY, DEFAULT_BACKEND, StartLlm
from tests.fixtures.otlp import Collector, collector, received_spans  # noqa: F401  (fixture)
from tests.fixtures.proxy import wait_for

PRICES = """---
apiVersion: v1
kind: ConfigMap
metadata: {name: prices}
data:
  prices.yaml: |
    gpt-4o-mini: {inputPerMillion: 0.15, cachedInputPerMillion: 0.075, outputPerMillion: 0.6}
    "claude-*": {inputPerMillion: 3, cachedInputPerMillion: 0.3, outputPerMillion: 15}
"""
BACKEND = DEFAULT_BACKEND + (
    "pricing: {configMapRef: {name: prices, key: prices.yaml}}\n"
    "keys:\n- {secretRef: {name: team-a-key, key: key}, team: a}\n"
)
# The stand-ins report 11 input tokens (4 of them, or 5, read from the cache) and 7 output.
GPT_COST = (7 * 0.15 + 4 * 0.075 + 7 * 0.6) / 1e6
CLAUDE_COST = (6 * 3 + 5 * 0.3 + 7 * 15) / 1e6


async def test_a_shared_price_table_prices_cached_input_per_team_key_and_model(
    start_llm: StartLlm,
) -> None:
    gateway = await start_llm(BACKEND, PRICES)
    gateway.openai.cached, gateway.anthropic.cached = 4, 5
    client = openai.AsyncOpenAI(base_url=f"{gateway.base}/v1", api_key=CLIENT_KEY, max_retries=0)
    hi = [{"role": "user", "content": "hi"}]
    await client.chat.completions.create(model="gpt-4o-mini", messages=hi)  # type: ignore[arg-type]
    stream = await client.chat.completions.create(
        model="claude-sonnet",
        messages=hi,  # type: ignore[arg-type]
        stream=True,
    )
    assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    async with httpx.AsyncClient(timeout=10) as http:
        text = (await http.get(f"http://127.0.0.1:{gateway.admin_port}/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    costs = {s.labels["model"]: s for s in families["ambient_llm_cost_usd"].samples}
    assert set(costs) == {"gpt-4o-mini", "claude-sonnet"}
    assert math.isclose(costs["gpt-4o-mini"].value, GPT_COST, rel_tol=1e-9)
    assert math.isclose(costs["claude-sonnet"].value, CLAUDE_COST, rel_tol=1e-9)
    for sample in costs.values():
        assert sample.labels["team"] == "a"
        assert len(sample.labels["key"]) == 12 and sample.labels["key"] not in CLIENT_KEY

    lines = [
        json.loads(r.getMessage()) for r in gateway.caplog.records if r.name == "test.llm.access"
    ]
    by_model = {line["gen_ai.request.model"]: line for line in lines}
    gpt, claude = by_model["gpt-4o-mini"], by_model["claude-sonnet"]
    assert gpt["llm.provider"] == "openai" and gpt["gen_ai.provider.name"] == "openai"
    assert claude["llm.provider"] == "claude" and claude["gen_ai.provider.name"] == "anthropic"
    for line, cached, cost in ((gpt, 4, GPT_COST), (claude, 5, CLAUDE_COST)):
        assert line["llm.team"] == "a" and line["gen_ai.operation.name"] == "chat"
        assert line["gen_ai.response.model"] == line["gen_ai.request.model"]
        assert line["gen_ai.usage.input_tokens"] == 11
        assert line["gen_ai.usage.output_tokens"] == 7
        assert line["gen_ai.usage.cache_read.input_tokens"] == cached
        assert math.isclose(line["llm.cost_usd"], cost, rel_tol=1e-6)
    assert CLIENT_KEY not in gateway.log_text()


async def test_the_span_carries_the_provider_models_usage_and_cost(
    start_llm: StartLlm,
    collector: Collector,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{collector.server_port}")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_on")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # export within the test
    gateway = await start_llm(BACKEND, PRICES)
    gateway.anthropic.cached = 5
    client = anthropic.AsyncAnthropic(base_url=gateway.base, api_key=CLIENT_KEY, max_retries=0)
    async with client.messages.stream(
        model="claude-sonnet", max_tokens=16, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        assert await stream.get_final_text()

    def llm_spans() -> list[dict[str, object]]:
        found = []
        for span in received_spans(collector):
            attributes = {a.key: a.value for a in span.attributes}
            if "llm.provider" in attributes:
                found.append(
                    {
                        k: getattr(v, v.WhichOneof("value") or "string_value")
                        for k, v in attributes.items()
                    }
                )
        return found

    await wait_for(lambda: bool(llm_spans()))
    (attributes,) = llm_spans()
    assert attributes["llm.provider"] == "claude"
    assert attributes["gen_ai.provider.name"] == "anthropic"
    assert (
        attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == "claude-sonnet"
    )
    assert attributes["gen_ai.usage.input_tokens"] == 11
    assert attributes["gen_ai.usage.output_tokens"] == 7
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 5
    assert math.isclose(float(attributes["llm.cost_usd"]), CLAUDE_COST, rel_tol=1e-6)  # type: ignore[arg-type]
    assert attributes["llm.team"] == "a"
