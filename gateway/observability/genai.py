"""OpenTelemetry GenAI metrics, one set of families for every path that carries model calls.

An InferencePool's answers (measured by ``inference_ext``'s tap) and an LLMBackend's provider
calls (``agentgw.llm``) both record here, so ``/metrics`` has each family once, summed over
``--workers`` (``gen_ai.*`` attributes as Prometheus labels, the semantic conventions' bucket
boundaries):

- ``gen_ai_server_time_to_first_token_seconds``, ``gen_ai_server_time_per_output_token_seconds``,
  ``gen_ai_server_request_duration_seconds`` and ``gen_ai_client_token_usage`` (plus
  ``gen_ai_token_type`` input | output), labelled ``gen_ai_operation_name``,
  ``gen_ai_provider_name`` (empty for a self-hosted pool), ``gen_ai_request_model`` and
  ``gen_ai_response_model``;
- ``gen_ai_client_operation_duration_seconds`` (``gen_ai_operation_name``,
  ``gen_ai_provider_name``, ``gen_ai_request_model``): a call to a hosted provider, from the
  gateway's request to the answer's end.

A plugin gets the process's instance from ``PluginApi.genai()``, which renders it on
``/metrics`` as the ``genai`` source the first time any plugin asks.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Metric
from prometheus_client.utils import floatToGoString

TTFT_BOUNDS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TPOT_BOUNDS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
DURATION_BOUNDS = tuple(0.01 * 2**i for i in range(14))  # 0.01 .. 81.92
TOKEN_BOUNDS = tuple(4**i for i in range(14))  # 1, 4, 16 .. 67108864

LABELS = (
    "gen_ai_operation_name",
    "gen_ai_provider_name",
    "gen_ai_request_model",
    "gen_ai_response_model",
)
CLIENT_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model")


class Histogram:
    """Bucket counts and a sum per label tuple (state: JSON-able lists)."""

    __slots__ = ("bounds", "series")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[tuple[str, ...], list[Any]] = {}

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        item = self.series.get(labels)
        if item is None:
            item = self.series[labels] = [[0] * (len(self.bounds) + 1), 0.0]
        item[0][bisect_left(self.bounds, value)] += 1
        item[1] += value

    def state(self) -> list[Any]:
        return [[list(k), list(v[0]), v[1]] for k, v in self.series.items()]


def tpot_of(seconds: float, ttft: float, output_tokens: int) -> float:
    """Time per output token after the first."""
    return (seconds - ttft) / (output_tokens - 1)


class GenAiMetrics:
    """This process's GenAI series (a MetricsSource)."""

    def __init__(self) -> None:
        self.ttft = Histogram(TTFT_BOUNDS)
        self.tpot = Histogram(TPOT_BOUNDS)
        self.server_duration = Histogram(DURATION_BOUNDS)
        self.token_usage = Histogram(TOKEN_BOUNDS)
        self.client_duration = Histogram(DURATION_BOUNDS)

    def answer(
        self,
        operation: str,
        provider: str,
        model: str,
        response_model: str,
        seconds: float,
        ttft: float | None,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        """A model's answer: its timing (from the request to its end) and token usage."""
        labels = (operation, provider, model, response_model)
        self.server_duration.observe(labels, seconds)
        if ttft is not None:
            self.ttft.observe(labels, ttft)
            if output_tokens and output_tokens > 1:
                self.tpot.observe(labels, tpot_of(seconds, ttft, output_tokens))
        if input_tokens is not None:
            self.token_usage.observe((*labels, "input"), input_tokens)
        if output_tokens is not None:
            self.token_usage.observe((*labels, "output"), output_tokens)

    def client_call(self, operation: str, provider: str, model: str, seconds: float) -> None:
        """A call to a hosted provider, as its client measures it."""
        self.client_duration.observe((operation, provider, model), seconds)

    def export_state(self) -> dict[str, Any]:
        return {
            "ttft": self.ttft.state(),
            "tpot": self.tpot.state(),
            "server_duration": self.server_duration.state(),
            "token_usage": self.token_usage.state(),
            "client_duration": self.client_duration.state(),
        }

    def collect(self, states: list[Any]) -> Iterable[Metric]:
        families = (
            ("gen_ai_server_time_to_first_token_seconds", "Time to the first token.", "ttft",
             TTFT_BOUNDS, LABELS),
            ("gen_ai_server_time_per_output_token_seconds", "Time per output token after the "
             "first.", "tpot", TPOT_BOUNDS, LABELS),
            ("gen_ai_server_request_duration_seconds", "Generation duration.", "server_duration",
             DURATION_BOUNDS, LABELS),
            ("gen_ai_client_token_usage", "Tokens used, by type.", "token_usage", TOKEN_BOUNDS,
             (*LABELS, "gen_ai_token_type")),
            ("gen_ai_client_operation_duration_seconds", "GenAI operation duration, from the "
             "gateway's call to a provider to the answer's end.", "client_duration",
             DURATION_BOUNDS, CLIENT_LABELS),
        )  # fmt: skip
        for name, doc, key, bounds, labels in families:
            rows = (row for state in states for row in state.get(key, ()))
            yield histogram(name, doc, bounds, labels, rows)


def histogram(
    name: str,
    doc: str,
    bounds: tuple[float, ...],
    labels: tuple[str, ...],
    rows: Iterable[list[Any]],
) -> HistogramMetricFamily:
    """A histogram family from every worker's ``[labels, counts, sum]`` rows, summed."""
    merged: dict[tuple[str, ...], list[Any]] = {}
    for key_list, counts, total in rows:
        key = tuple(key_list)
        item = merged.get(key)
        if item is None:
            merged[key] = [list(counts), total]
        else:
            item[0] = [a + b for a, b in zip(item[0], counts, strict=True)]
            item[1] += total
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for key, (counts, total) in sorted(merged.items()):
        running, buckets = 0, []
        for bound, n in zip((*bounds, float("inf")), counts, strict=True):
            running += n
            buckets.append((floatToGoString(bound), running))
        family.add_metric(list(key), buckets, sum_value=total)
    return family
