"""Per-version measurements that merge exactly across workers: counts and log-bucket histograms.

A histogram keeps counts in fixed buckets whose bounds grow by 4% from 100 µs, so a percentile
read from the merge of several workers' histograms is the one read from all their samples
together, within the bucket's 4%. Both versions are measured the same way, so their ratio is
not biased.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

_BASE = 1e-4  # seconds: the upper bound of bucket 0
_GROWTH = 1.04
_LOG_GROWTH = math.log(_GROWTH)
_TOP = 600  # 1e-4 * 1.04**600 is about 1.7e6 s: nothing measured is longer


def bucket_of(seconds: float) -> int:
    """The bucket holding ``seconds``: the first whose upper bound is at least it."""
    if seconds <= _BASE:
        return 0
    return min(_TOP, math.ceil(math.log(seconds / _BASE) / _LOG_GROWTH - 1e-9))


def bucket_bound(index: int) -> float:
    """The upper bound of bucket ``index`` in seconds."""
    return _BASE * _GROWTH**index


def quantile(counts: dict[int, int], q: float) -> float | None:
    """The ``q`` quantile (upper bucket bound) of a histogram; None when it is empty."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(counts):
        seen += counts[index]
        if seen >= rank:
            return bucket_bound(index)
    return bucket_bound(max(counts))


@dataclass(slots=True)
class Aggregate:
    """One version's requests over one interval: counts, histograms, score sums."""

    requests: int = 0
    errors: int = 0
    histograms: dict[str, dict[int, int]] = field(default_factory=dict)  # ttft, tpot, latency
    scores: dict[str, list[float]] = field(default_factory=dict)  # metric -> [sum, count]

    def observe(self, status: int, ttft: float | None, tpot: float | None, duration: float) -> None:
        """Count one request; a 5xx (or no response at all, status 0) is an error."""
        self.requests += 1
        if status >= 500 or status == 0:
            self.errors += 1
        for name, value in (("ttft", ttft), ("tpot", tpot), ("latency", duration)):
            if value is not None:
                counts = self.histograms.setdefault(name, {})
                index = bucket_of(value)
                counts[index] = counts.get(index, 0) + 1

    def score(self, metric: str, value: float, count: int = 1) -> None:
        """Add ``count`` scores (feedback of one answer; agreed copies) summing to ``value``."""
        total = self.scores.setdefault(metric, [0.0, 0.0])
        total[0] += value
        total[1] += count

    def merge(self, other: Aggregate) -> None:
        """Add ``other``'s counts to these."""
        self.requests += other.requests
        self.errors += other.errors
        for name, counts in other.histograms.items():
            mine = self.histograms.setdefault(name, {})
            for index, count in counts.items():
                mine[index] = mine.get(index, 0) + count
        for metric, (total, n) in other.scores.items():
            mine_score = self.scores.setdefault(metric, [0.0, 0.0])
            mine_score[0] += total
            mine_score[1] += n

    def percentile(self, histogram: str, q: float) -> float | None:
        """A percentile of ``ttft``, ``tpot`` or ``latency``; None without samples."""
        return quantile(self.histograms.get(histogram, {}), q)

    def error_rate(self) -> float | None:
        """Errors per request; None without requests."""
        return self.errors / self.requests if self.requests else None

    def mean_score(self, metric: str) -> float | None:
        """The mean of ``metric``'s scores; None without any."""
        total, count = self.scores.get(metric, (0.0, 0.0))
        return total / count if count else None

    def to_state(self) -> dict[str, Any]:
        """Plain data for the pipe between processes."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "histograms": self.histograms,
            "scores": self.scores,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Aggregate:
        """The inverse of :meth:`to_state`."""
        return cls(
            int(state["requests"]),
            int(state["errors"]),
            {name: dict(counts) for name, counts in state["histograms"].items()},
            {metric: list(pair) for metric, pair in state["scores"].items()},
        )
