"""LLMBackend metrics on the gateway's ``/metrics``, summed over ``--workers``.

- ``ambient_llm_requests_total`` (``backend``, ``provider``, ``model``, ``code``): every call to a
  provider, ``code`` its status (``0`` when no answer came: a connect failure or a timeout);
- ``ambient_llm_tokens_total`` (``backend``, ``provider``, ``model``, ``gen_ai_token_type``
  input | output): from the providers' usage;
- ``ambient_llm_cost_usd_total`` (``backend``, ``provider``, ``model``, ``team``, ``key``): the
  tokens priced by the model entry's ``price`` or the ``spec.pricing`` table (USD per million
  input, cached input and output tokens), for priced models; ``key`` is the client key's id
  (the start of its SHA-256, never the key), ``team`` its team (both empty without keys);
- OpenTelemetry GenAI, in the gateway's shared families (:mod:`gateway.observability.genai`):
  ``gen_ai_client_operation_duration_seconds`` for every call, and for each whole answer
  ``gen_ai_server_time_to_first_token_seconds`` (to the provider's first byte, streams only),
  ``gen_ai_server_request_duration_seconds``, ``gen_ai_client_token_usage`` and (streams)
  ``gen_ai_server_time_per_output_token_seconds``.

``model`` is the provider's model name (after renames and wildcards).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Metric

from agentgw.llm.usage import Usage

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
        model: str,
        usage: Usage,
    ) -> None:
        for kind, count in (("input", usage.input), ("output", usage.output)):
            if count:
                key = (backend, provider, model, kind)
                self.tokens[key] = self.tokens.get(key, 0) + count

    def export_state(self) -> Any:
        return {
            "requests": [[*k, v] for k, v in self.requests.items()],
            "tokens": [[*k, v] for k, v in self.tokens.items()],
            "costs": [[*k, v] for k, v in self.costs.items()],
        }

    def collect(self, states: list[Any]) -> Iterable[Metric]:
        requests: dict[tuple[str, ...], int] = {}
        tokens: dict[tuple[str, ...], int] = {}
        costs: dict[tuple[str, ...], float] = {}
        for state in states:
            for *key, usd in state.get("costs", ()):
                costs[tuple(key)] = costs.get(tuple(key), 0.0) + usd
            for *key, value in state.get("requests", ()):
                requests[tuple(key)] = requests.get(tuple(key), 0) + value
            for *key, value in state.get("tokens", ()):
                tokens[tuple(key)] = tokens.get(tuple(key), 0) + value
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
