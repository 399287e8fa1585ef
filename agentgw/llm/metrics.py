"""LLMBackend metrics on the gateway's ``/metrics``, summed over ``--workers``.

- ``ambient_llm_requests_total`` (``backend``, ``provider``, ``model``, ``code``): every call to a
  provider, ``code`` its status (``0`` when no answer came: a connect failure or a timeout);
- ``ambient_llm_tokens_total`` (``backend``, ``provider``, ``model``, ``gen_ai_token_type``
  input | output): from the providers' usage;
- ``ambient_llm_cost_usd_total`` (``backend``, ``provider``, ``model``, ``team``, ``key``): the
  tokens priced by the model entry's ``price`` or the ``spec.pricing`` table (USD per million
  input, cached input and output tokens), for priced models; ``key`` is the client key's id
  (the start of its SHA-256, never the key), ``team`` its team (both empty without keys);
- ``gen_ai_client_operation_duration_seconds`` (``gen_ai_operation_name``,
  ``gen_ai_provider_name``, ``gen_ai_request_model``): OpenTelemetry GenAI's client histogram,
  from the call's start to the answer's end, with the semantic conventions' bucket boundaries.

``model`` is the provider's model name (after renames and wildcards).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Metric
from prometheus_client.utils import floatToGoString

from agentgw.llm.usage import Usage

BOUNDS = tuple(0.01 * 2**i for i in range(14))  # 0.01, 0.02, ... 81.92 s
_PROVIDER_NAMES = {"OpenAI": "openai", "Anthropic": "anthropic"}
# The semantic conventions' well-known gen_ai.operation.name values.
_OPERATION_NAMES = {
    "chat": "chat",
    "messages": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}


def genai_provider(provider_type: str) -> str:
    """The semantic conventions' ``gen_ai.provider.name`` of a provider type."""
    return _PROVIDER_NAMES.get(provider_type, provider_type.lower())


def genai_operation(operation: str) -> str:
    """The semantic conventions' ``gen_ai.operation.name`` of an operation."""
    return _OPERATION_NAMES.get(operation, operation)


@dataclass(slots=True)
class LlmMetrics:
    """This process's counts (a ``MetricsSource``)."""

    requests: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    tokens: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    durations: dict[tuple[str, str, str], tuple[list[int], float]] = field(default_factory=dict)
    costs: dict[tuple[str, str, str, str, str], float] = field(default_factory=dict)

    def cost(
        self, backend: str, provider: str, model: str, team: str, key: str, usd: float
    ) -> None:
        series = (backend, provider, model, team, key)
        self.costs[series] = self.costs.get(series, 0.0) + usd

    def call(self, backend: str, provider: str, model: str, status: int) -> None:
        key = (backend, provider, model, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1

    def answered(
        self,
        backend: str,
        provider: str,
        provider_type: str,
        operation: str,
        model: str,
        seconds: float,
        usage: Usage,
    ) -> None:
        for kind, count in (("input", usage.input), ("output", usage.output)):
            if count:
                key = (backend, provider, model, kind)
                self.tokens[key] = self.tokens.get(key, 0) + count
        hkey = (genai_operation(operation), genai_provider(provider_type), model)
        counts, total = self.durations.get(hkey) or ([0] * (len(BOUNDS) + 1), 0.0)
        counts[bisect_left(BOUNDS, seconds)] += 1
        self.durations[hkey] = (counts, total + seconds)

    def export_state(self) -> Any:
        return {
            "requests": [[*k, v] for k, v in self.requests.items()],
            "tokens": [[*k, v] for k, v in self.tokens.items()],
            "durations": [[*k, counts, total] for k, (counts, total) in self.durations.items()],
            "costs": [[*k, v] for k, v in self.costs.items()],
        }

    def collect(self, states: list[Any]) -> Iterable[Metric]:
        requests: dict[tuple[str, ...], int] = {}
        tokens: dict[tuple[str, ...], int] = {}
        durations: dict[tuple[str, ...], tuple[list[int], float]] = {}
        costs: dict[tuple[str, ...], float] = {}
        for state in states:
            for *key, usd in state.get("costs", ()):
                costs[tuple(key)] = costs.get(tuple(key), 0.0) + usd
            for *key, value in state.get("requests", ()):
                requests[tuple(key)] = requests.get(tuple(key), 0) + value
            for *key, value in state.get("tokens", ()):
                tokens[tuple(key)] = tokens.get(tuple(key), 0) + value
            for *key, counts, total in state.get("durations", ()):
                seen, summed = durations.get(tuple(key)) or ([0] * len(counts), 0.0)
                durations[tuple(key)] = (
                    [a + b for a, b in zip(seen, counts, strict=True)],
                    summed + total,
                )
        family = CounterMetricFamily(
            "ambient_llm_requests",
            "Calls from LLMBackends to providers, by status (0: no answer).",
            labels=["backend", "provider", "model", "code"],
        )
        for key, value in sorted(requests.items()):
            family.add_metric(list(key), value)
        yield family
        family = CounterMetricFamily(
            "ambient_llm_tokens",
            "Tokens providers reported for LLMBackend calls.",
            labels=["backend", "provider", "model", "gen_ai_token_type"],
        )
        for key, value in sorted(tokens.items()):
            family.add_metric(list(key), value)
        yield family
        family = CounterMetricFamily(
            "ambient_llm_cost_usd",
            "What LLMBackend calls cost, from the models' prices (USD).",
            labels=["backend", "provider", "model", "team", "key"],
        )
        for key, usd in sorted(costs.items()):
            family.add_metric(list(key), usd)
        yield family
        histogram = HistogramMetricFamily(
            "gen_ai_client_operation_duration_seconds",
            "GenAI operation duration, from the LLMBackend's call to the answer's end.",
            labels=["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"],
        )
        for key, (counts, total) in sorted(durations.items()):
            running, buckets = 0, []
            for bound, n in zip((*BOUNDS, float("inf")), counts, strict=True):
                running += n
                buckets.append((floatToGoString(bound), running))
            histogram.add_metric(list(key), buckets, sum_value=total)
        yield histogram
