"""What the gateway reports about LLM traffic to a pool: the inference and GenAI metrics on
``/metrics`` (read with Prometheus' own text parser), and the GenAI attributes on spans (the
OpenTelemetry SDK's in-memory exporter). Real gateway, real simulators, the ``openai`` SDK."""

from __future__ import annotations

import logging

import openai
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families

from gateway.observability.access_log import AccessLog
from gateway.observability.metrics import IstioMetrics
from gateway.observability.telemetry import GatewayTelemetry
from gateway.observability.tracing import Tracer
from inference_ext.pool import Pools
from tests.fixtures.inference import pools  # noqa: F401  (fixture)
from tests.fixtures.proxy import holder_from_yaml, wait_for
from tests.inference_ext.test_pool_routing import FAST, fleet_yaml, sims


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def test_llm_answers_are_measured_in_metrics_and_spans(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    caplog.set_level(logging.INFO, logger="test.inference.access")
    telemetry = GatewayTelemetry(
        IstioMetrics(),
        Tracer(provider),
        AccessLog("json", logging.getLogger("test.inference.access")),
    )
    async with sims(FAST, 3) as servers:
        await gateway_factory(holder_from_yaml(fleet_yaml(free_port, servers)), telemetry=telemetry)
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{free_port}/v1", api_key="-")
        stream = await client.chat.completions.create(
            model="llama-3-8b",
            messages=[{"role": "user", "content": "count to five"}],
            stream=True,
            stream_options={"include_usage": True},
            max_tokens=5,
        )
        usage = None
        async for chunk in stream:
            usage = chunk.usage or usage
        answer = await client.chat.completions.create(
            model="llama-3-8b", messages=[{"role": "user", "content": "hi"}], max_tokens=3
        )
        await client.close()
        assert usage is not None and answer.usage is not None
        await wait_for(lambda: len(spans.get_finished_spans()) == 2)

    values = samples(telemetry.metrics.render().decode())
    model = (("model_name", "llama-3-8b"), ("target_model_name", "llama-3-8b"))
    assert values[("inference_objective_request_total", model)] == 2
    assert values[("inference_objective_output_tokens_count", model)] == 2
    assert values[("inference_objective_output_tokens_sum", model)] == 5 + 3
    assert values[("inference_objective_input_tokens_sum", model)] == (
        usage.prompt_tokens + answer.usage.prompt_tokens
    )
    assert values[("inference_objective_request_duration_seconds_count", model)] == 2
    genai = (
        ("gen_ai_operation_name", "chat"),
        ("gen_ai_provider_name", ""),  # a self-hosted pool is no hosted provider
        ("gen_ai_request_model", "llama-3-8b"),
        ("gen_ai_response_model", "llama-3-8b"),
    )
    assert values[("gen_ai_server_time_to_first_token_seconds_count", genai)] == 2
    assert values[("gen_ai_server_time_to_first_token_seconds_sum", genai)] > 0
    # Time per output token: both answers have more than one token.
    assert values[("gen_ai_server_time_per_output_token_seconds_count", genai)] == 2
    output = tuple(sorted((*genai, ("gen_ai_token_type", "output"))))
    assert values[("gen_ai_client_token_usage_sum", output)] == 8
    pool = (("name", "llama"), ("namespace", "default"))
    assert values[("inference_pool_ready_pods", pool)] == 3
    assert 0 <= values[("inference_pool_average_kv_cache_utilization", pool)] <= 1
    assert values[("inference_pool_average_queue_size", pool)] >= 0

    streamed = next(
        s
        for s in spans.get_finished_spans()
        if (s.attributes or {}).get("gen_ai.usage.output_tokens") == 5
    )
    attributes = streamed.attributes or {}
    assert attributes["gen_ai.request.model"] == "llama-3-8b"
    assert attributes["gen_ai.response.model"] == "llama-3-8b"
    assert attributes["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert any("gen_ai.response.model" in r.getMessage() for r in caplog.records)
    telemetry.close()


async def test_refused_requests_count_as_objective_errors(
    pools: Pools,  # noqa: F811
    gateway_factory,
    free_port: int,
) -> None:
    import httpx

    telemetry = GatewayTelemetry(IstioMetrics(), Tracer(TracerProvider()), None)
    async with sims(FAST, 1) as servers:
        yaml = fleet_yaml(free_port, servers).replace(
            f"podIP: {servers[0].address}",
            "podIP: 127.0.0.9",  # a pod nobody serves
        )
        await gateway_factory(holder_from_yaml(yaml), telemetry=telemetry)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port}") as c:
            r = await c.post("/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code in (502, 503)
    values = samples(telemetry.metrics.render().decode())
    errors = {k: v for k, v in values.items() if k[0] == "inference_objective_request_error_total"}
    assert sum(errors.values()) == 1
    ((_, labels),) = errors
    assert dict(labels)["error_code"] == str(r.status_code)
    telemetry.close()
