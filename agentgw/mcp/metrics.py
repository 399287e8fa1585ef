"""MCPBackend metrics on the gateway's ``/metrics``, summed over ``--workers``.

- ``mcp_requests_total`` (``backend``, ``method``, ``target``, ``tool``, ``outcome``): every
  client request; ``target`` and ``tool`` are set for routed calls (``tool`` for ``tools/call``
  only), ``outcome`` is ``ok``, ``error`` (a JSON-RPC error answered) or ``refused`` (a
  transport refusal: 4xx);
- ``mcp_request_duration_seconds`` (``backend``, ``method``): from the request to its answer's
  end (a relayed stream's end);
- ``mcp_upstream_errors_total`` (``backend``, ``target``): upstream calls that failed;
- ``mcp_sessions_started_total`` and ``mcp_sessions_ended_total`` (``backend``): sessions live
  in their ids, so the active ones are started minus ended (and those abandoned).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Metric
from prometheus_client.utils import floatToGoString

BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@dataclass(slots=True)
class McpMetrics:
    """This process's counts (a ``MetricsSource``)."""

    requests: dict[tuple[str, str, str, str, str], int] = field(default_factory=dict)
    durations: dict[tuple[str, str], tuple[list[int], float]] = field(default_factory=dict)
    upstream_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    sessions: dict[tuple[str, str], int] = field(default_factory=dict)  # (backend, started|ended)

    def request(
        self, backend: str, method: str, target: str, tool: str, outcome: str, seconds: float
    ) -> None:
        key = (backend, method, target, tool, outcome)
        self.requests[key] = self.requests.get(key, 0) + 1
        counts, total = self.durations.get((backend, method)) or ([0] * (len(BOUNDS) + 1), 0.0)
        counts[bisect_left(BOUNDS, seconds)] += 1
        self.durations[(backend, method)] = (counts, total + seconds)

    def upstream_error(self, backend: str, target: str) -> None:
        self.upstream_errors[(backend, target)] = self.upstream_errors.get((backend, target), 0) + 1

    def session(self, backend: str, event: str) -> None:
        self.sessions[(backend, event)] = self.sessions.get((backend, event), 0) + 1

    def export_state(self) -> Any:
        return {
            "requests": [[*k, v] for k, v in self.requests.items()],
            "durations": [[*k, counts, total] for k, (counts, total) in self.durations.items()],
            "upstream_errors": [[*k, v] for k, v in self.upstream_errors.items()],
            "sessions": [[*k, v] for k, v in self.sessions.items()],
        }

    def collect(self, states: list[Any]) -> Iterable[Metric]:
        sums: dict[str, dict[tuple[str, ...], int]] = {
            "requests": {},
            "upstream_errors": {},
            "sessions": {},
        }
        durations: dict[tuple[str, ...], tuple[list[int], float]] = {}
        for state in states:
            for name, table in sums.items():
                for *key, value in state.get(name, ()):
                    table[tuple(key)] = table.get(tuple(key), 0) + value
            for *key, counts, total in state.get("durations", ()):
                seen, summed = durations.get(tuple(key)) or ([0] * len(counts), 0.0)
                merged = [a + b for a, b in zip(seen, counts, strict=True)]
                durations[tuple(key)] = (merged, summed + total)
        family = CounterMetricFamily(
            "mcp_requests",
            "MCP requests from clients to MCPBackends, by outcome.",
            labels=["backend", "method", "target", "tool", "outcome"],
        )
        for key, value in sorted(sums["requests"].items()):
            family.add_metric(list(key), value)
        yield family
        family = CounterMetricFamily(
            "mcp_upstream_errors",
            "Calls from MCPBackends to their targets that failed.",
            labels=["backend", "target"],
        )
        for key, value in sorted(sums["upstream_errors"].items()):
            family.add_metric(list(key), value)
        yield family
        for event in ("started", "ended"):
            family = CounterMetricFamily(
                f"mcp_sessions_{event}", f"MCP sessions {event}.", labels=["backend"]
            )
            for key, value in sorted(sums["sessions"].items()):
                if key[1] == event:
                    family.add_metric([key[0]], value)
            yield family
        histogram = HistogramMetricFamily(
            "mcp_request_duration_seconds",
            "MCP request duration, from the request to its answer's end.",
            labels=["backend", "method"],
        )
        for key, (counts, total) in sorted(durations.items()):
            running, buckets = 0, []
            for bound, n in zip((*BOUNDS, float("inf")), counts, strict=True):
                running += n
                buckets.append((floatToGoString(bound), running))
            histogram.add_metric(list(key), buckets, sum_value=total)
        yield histogram
