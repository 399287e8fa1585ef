"""A2ABackend metrics: ``a2a_requests_total`` (``backend``, ``agent``, ``method``, ``outcome``).

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

    def request(self, backend: str, agent: str, method: str, outcome: str) -> None:
        key = (backend, agent, method, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1

    def export_state(self) -> Any:
        return {"requests": [[*k, v] for k, v in self.requests.items()]}

    def collect(self, states: list[Any]) -> Iterable[Metric]:
        requests: dict[tuple[str, ...], int] = {}
        for state in states:
            for *key, value in state.get("requests", ()):
                requests[tuple(key)] = requests.get(tuple(key), 0) + value
        family = CounterMetricFamily(
            "a2a_requests",
            "A2A requests through A2ABackends, by method and outcome.",
            labels=["backend", "agent", "method", "outcome"],
        )
        for key, value in sorted(requests.items()):
            family.add_metric(list(key), value)
        yield family
