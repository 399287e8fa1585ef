"""The inference extension's metrics and the response tap that measures LLM answers.

On the gateway's ``/metrics`` (a :class:`~gateway.observability.metrics.MetricsSource`, summed
over ``--workers``):

- per objective (labels ``model_name``, ``target_model_name``), as the upstream EPP names them:
  ``inference_objective_request_total``, ``inference_objective_request_error_total``
  (+ ``error_code``), ``inference_objective_request_duration_seconds``,
  ``inference_objective_input_tokens``, ``inference_objective_output_tokens``;
- per pool (labels ``name``, ``namespace``): ``inference_pool_average_kv_cache_utilization``,
  ``inference_pool_average_queue_size``, ``inference_pool_ready_pods`` (from the picker's latest
  scrapes; the mean over workers);
- OpenTelemetry GenAI (``gen_ai_server_time_to_first_token_seconds`` and the others): recorded
  in the gateway's shared GenAI families (:mod:`gateway.observability.genai`), with an empty
  ``gen_ai_provider_name`` (a self-hosted pool is no hosted provider).

:class:`GenAiTap` reads each answer as it passes (after its bytes reached the client): for an
event stream, the first event's time (time to first token) and the ``usage`` of the last chunk
(``stream_options.include_usage``); for a JSON answer, its ``usage``. The request's span and
access-log line get ``gen_ai.request.model`` (the model the server was asked for),
``inference.model.incoming`` (the model the client named: another after a rewrite),
``gen_ai.response.model`` and the usage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Metric

from gateway.backends.base import ProxyRequest
from gateway.observability.genai import (
    DURATION_BOUNDS,
    TOKEN_BOUNDS,
    GenAiMetrics,
    Histogram,
    histogram,
)
from gateway.protocols.sse import SseError, SseReader

MAX_JSON_ANSWER = 1 << 20  # a non-streaming answer larger than this is not read for usage

_OBJECTIVE_LABELS = ("model_name", "target_model_name")


PoolGauges = Callable[[], Iterable[tuple[str, float, float, int]]]


class InferenceMetrics:
    """The extension's metrics in one process (a MetricsSource)."""

    def __init__(self, pools: PoolGauges, genai: GenAiMetrics) -> None:
        self._pools = pools  # (pool, average kv use, average queue, ready endpoints)
        self.requests: dict[tuple[str, ...], int] = {}
        self.errors: dict[tuple[str, ...], int] = {}
        self.duration = Histogram(DURATION_BOUNDS)
        self.input_tokens = Histogram(TOKEN_BOUNDS)
        self.output_tokens = Histogram(TOKEN_BOUNDS)
        self.genai = genai

    # -- recording -------------------------------------------------------------------------------

    def request_done(self, model: str, target: str, status: int, seconds: float) -> None:
        """An objective's request ended with ``status``."""
        key = (model, target)
        self.requests[key] = self.requests.get(key, 0) + 1
        if status >= 400 or status == 0:
            error = (model, target, str(status))
            self.errors[error] = self.errors.get(error, 0) + 1
        else:
            self.duration.observe(key, seconds)

    def answer(
        self,
        operation: str,
        incoming: str,
        model: str,
        response_model: str,
        seconds: float,
        ttft: float | None,
        input_tokens: int | None,
        output_tokens: int | None,
    ) -> None:
        """A model's answer: its timing and token usage (``incoming`` is the model the client
        named, ``model`` the one the server was asked for: they differ after a rewrite)."""
        self.genai.answer(
            operation, "", model, response_model, seconds, ttft, input_tokens, output_tokens
        )
        key = (incoming, model)
        if input_tokens is not None:
            self.input_tokens.observe(key, input_tokens)
        if output_tokens is not None:
            self.output_tokens.observe(key, output_tokens)

    # -- MetricsSource ---------------------------------------------------------------------------

    def export_state(self) -> dict[str, Any]:
        """This process's values (the pool gauges as read now)."""
        return {
            "requests": [[*k, n] for k, n in self.requests.items()],
            "errors": [[*k, n] for k, n in self.errors.items()],
            "duration": self.duration.state(),
            "input_tokens": self.input_tokens.state(),
            "output_tokens": self.output_tokens.state(),
            "pools": [list(row) for row in self._pools()],
        }

    def collect(self, states: list[Any]) -> Iterable[Metric]:
        """The families for every worker's state: counts summed, pool gauges averaged."""
        yield _counter(
            "inference_objective_request",
            "Requests per objective's model and target model.",
            _OBJECTIVE_LABELS,
            (row for s in states for row in s["requests"]),
        )
        yield _counter(
            "inference_objective_request_error",
            "Requests that ended in an error, per model and status.",
            (*_OBJECTIVE_LABELS, "error_code"),
            (row for s in states for row in s["errors"]),
        )
        histograms = (
            ("inference_objective_request_duration_seconds", "Request duration.", "duration",
             DURATION_BOUNDS, _OBJECTIVE_LABELS),
            ("inference_objective_input_tokens", "Input tokens per request.", "input_tokens",
             TOKEN_BOUNDS, _OBJECTIVE_LABELS),
            ("inference_objective_output_tokens", "Output tokens per request.", "output_tokens",
             TOKEN_BOUNDS, _OBJECTIVE_LABELS),
        )  # fmt: skip
        for name, doc, key, bounds, labels in histograms:
            yield histogram(name, doc, bounds, labels, (row for s in states for row in s[key]))
        pools: dict[str, list[tuple[float, float, int]]] = {}
        for state in states:
            for name, kv, queue, ready in state["pools"]:
                pools.setdefault(name, []).append((kv, queue, ready))
        gauges = (
            ("inference_pool_average_kv_cache_utilization", "Mean KV-cache use of a pool's "
             "servers.", 0),
            ("inference_pool_average_queue_size", "Mean waiting queue of a pool's servers.", 1),
            ("inference_pool_ready_pods", "Ready endpoints of a pool.", 2),
        )  # fmt: skip
        for name, doc, column in gauges:
            family = GaugeMetricFamily(name, doc, labels=["name", "namespace"])
            for pool, rows in sorted(pools.items()):
                namespace, _, short = pool.rpartition("/")
                family.add_metric([short, namespace], sum(r[column] for r in rows) / len(rows))
            yield family


def _counter(
    name: str, doc: str, labels: tuple[str, ...], rows: Iterable[list[Any]]
) -> CounterMetricFamily:
    totals: dict[tuple[str, ...], int] = {}
    for row in rows:
        key = tuple(row[:-1])
        totals[key] = totals.get(key, 0) + row[-1]
    family = CounterMetricFamily(name, doc, labels=list(labels))
    for key, value in sorted(totals.items()):
        family.add_metric(list(key), value)
    return family


# Called as the answer ends, before the metrics: (tap, seconds, time to first token or None).
TapFinish = Callable[["GenAiTap", float, "float | None"], None]


class GenAiTap:
    """Measures one LLM answer on its way to the client (see the module docstring)."""

    __slots__ = (
        "_body",
        "_first",
        "_reader",
        "_size",
        "answer",
        "finish",
        "incoming",
        "input_tokens",
        "metrics",
        "model",
        "on_head",
        "operation",
        "output_tokens",
        "request",
        "response_model",
        "started",
        "status",
    )

    def __init__(
        self,
        metrics: InferenceMetrics,
        request: ProxyRequest,
        model: str,
        operation: str,
        finish: TapFinish | None = None,
        on_head: Callable[[GenAiTap], None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.request = request
        self.incoming = model  # the model the client named
        self.model = model  # the model the server is asked for (``finish`` may say another)
        self.finish = finish
        self.on_head = on_head
        # Something fed the answer's body as it passes (e.g. an AnswerReader for a mirrored
        # request's comparison), set by ``on_head``; a ValueError from it stops the feeding.
        self.answer: Any = None
        self.operation = operation
        self.started = time.perf_counter()
        self.status = 0
        self.response_model = ""
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None
        self._first: float | None = None
        self._reader: SseReader | None = None
        self._body: list[bytes] | None = None
        self._size = 0

    def response_head(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """An event stream is read event by event, a JSON answer whole (bounded)."""
        self.status = status
        for name, value in headers:
            if name.lower() == b"content-type":
                kind = value.split(b";", 1)[0].strip().lower()
                if kind == b"text/event-stream":
                    self._reader = SseReader()
                elif kind == b"application/json":
                    self._body = []
                break
        if self.on_head is not None:
            self.on_head(self)

    def response_body(self, chunk: bytes) -> None:
        """Note the first event's time; read the events that carry the model or the usage."""
        answer = self.answer
        if answer is not None:
            try:
                answer.feed(chunk)
            except ValueError:
                self.answer = None
        reader = self._reader
        if reader is not None:
            try:
                events = reader.feed(chunk)
            except SseError:
                self._reader = None
                return
            for event in events:
                data = event.data
                if self._first is None:
                    self._first = time.perf_counter()
                    self._read(data)
                elif '"usage"' in data:
                    self._read(data)
            return
        body = self._body
        if body is not None:
            self._size += len(chunk)
            if self._size > MAX_JSON_ANSWER:
                self._body = None
            else:
                body.append(chunk)

    def response_trailers(self, trailers: list[tuple[bytes, bytes]]) -> None:
        """Nothing to read."""

    def response_end(self, complete: bool) -> None:
        """Record the answer's metrics and annotate the request."""
        if self._body is not None:
            self._first = self._first or time.perf_counter()
            self._read(b"".join(self._body))
        seconds = time.perf_counter() - self.started
        ttft = self._first - self.started if self._first is not None else None
        if self.finish is not None:
            self.finish(self, seconds, ttft)
        request = self.request
        request.annotate("gen_ai.request.model", self.model)
        request.annotate("inference.model.incoming", self.incoming)
        request.annotate("gen_ai.operation.name", self.operation)
        if self.response_model:
            request.annotate("gen_ai.response.model", self.response_model)
        if self.input_tokens is not None:
            request.annotate("gen_ai.usage.input_tokens", self.input_tokens)
        if self.output_tokens is not None:
            request.annotate("gen_ai.usage.output_tokens", self.output_tokens)
        if complete and 200 <= self.status < 300:
            self.metrics.answer(
                self.operation,
                self.incoming,
                self.model,
                self.response_model,
                seconds,
                ttft,
                self.input_tokens,
                self.output_tokens,
            )

    def _read(self, data: str | bytes) -> None:
        if data == "[DONE]":
            return
        try:
            answer = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(answer, dict):
            return
        model = answer.get("model")
        if isinstance(model, str) and model:
            self.response_model = model
        usage = answer.get("usage")
        if isinstance(usage, Mapping):
            prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
            completion = usage.get("completion_tokens", usage.get("output_tokens"))
            if isinstance(prompt, int):
                self.input_tokens = prompt
            if isinstance(completion, int):
                self.output_tokens = completion


def operation_of(path: str) -> str:
    """The GenAI operation a request path names (``gen_ai.operation.name``)."""
    if path.endswith("/chat/completions"):
        return "chat"
    if path.endswith("/completions"):
        return "text_completion"
    if path.endswith("/embeddings"):
        return "embeddings"
    if path.endswith("/responses"):
        return "generate_content"
    return "chat"
