"""A2ABackend metrics: ``a2a_requests_total`` (``backend``, ``agent``, ``method``, ``outcome``)
and ``a2a_task_states_total`` (``backend``, ``agent``, ``state``: the last task state each
answer reported, e.g. ``completed``, ``input-required``, ``failed``).

``method`` is the JSON-RPC method (v0.3 ``message/send`` or v1.0 ``SendMessage`` as sent) or
``card`` for agent cards; ``outcome`` is ``ok``, ``error`` (a JSON-RPC error, in a JSON answer
or a stream's event) or ``failed`` (the agent could not be reached or answered 5xx).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Metric


@dataclass(slots=True)
class A2aMetrics:
    """This process's counts (a ``MetricsSource``)."""

    requests: dict[tuple[str, str, str, str], int] = field(default_factory=dict)
    states: dict[tuple[str, str, str], int] = field(default_factory=dict)

    def request(self, backend: str, agent: str, method: str, outcome: str) -> None:
        key = (backend, agent, method, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1

    def task_state(self, backend: str, agent: str, state: str) -> None:
        key = (backend, agent, state)
        self.states[key] = self.states.get(key, 0) + 1

    def export_state(self) -> Any:
        return {
            "requests": [[*k, v] for k, v in self.requests.items()],
            "states": [[*k, v] for k, v in self.states.items()],
        }

    def collect(self, states: list[Any]) -> Iterable[Metric]:
        families = (
            ("requests", "a2a_requests", "A2A requests through A2ABackends, by method and outcome.",
             ["backend", "agent", "method", "outcome"]),
            ("states", "a2a_task_states", "The last task state each A2A answer reported.",
             ["backend", "agent", "state"]),
        )  # fmt: skip
        for part, name, documentation, labels in families:
            counts: dict[tuple[str, ...], int] = {}
            for state in states:
                for *key, value in state.get(part, ()):
                    counts[tuple(key)] = counts.get(tuple(key), 0) + value
            family = CounterMetricFamily(name, documentation, labels=labels)
            for key, value in sorted(counts.items()):
                family.add_metric(list(key), value)
            yield family
