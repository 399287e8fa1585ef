"""The engine's counters and their Prometheus exposition under vLLM's metric names.

Rendered by hand, not through ``prometheus_client``: an endpoint picker scrapes every replica
every 50 ms, so the text is small (no HELP lines, no ``_created`` samples) and its fixed parts
are built once. Latencies are in seconds of the event loop's clock, i.e. after ``time_scale``:
what a client of the simulator measures.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from inference_ext.sim.engine import Engine

# vLLM's buckets (vllm/v1/metrics/loggers.py).
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip
ITL_BUCKETS = (
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip


class Histogram:
    """Counts per bucket (not cumulative), a sum and a count."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float, times: int = 1) -> None:
        """Record ``value`` ``times`` times (a step gives many sequences the same gap)."""
        self.counts[bisect_left(self.bounds, value)] += times
        self.sum += value * times
        self.count += times


class EngineStats:
    """Totals since start, as vLLM counts them (prefix cache queries and hits are in tokens)."""

    __slots__ = (
        "finished",
        "generation_tokens",
        "itl",
        "prefix_hits",
        "prefix_queries",
        "prompt_tokens",
        "stalls",
        "steps",
        "ttft",
    )

    def __init__(self) -> None:
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.prefix_queries = 0
        self.prefix_hits = 0
        self.steps = 0
        self.stalls = 0
        # finished_reason -> requests; vLLM's reasons are there from the start, at 0
        self.finished: dict[str, int] = {"abort": 0, "length": 0, "stop": 0}
        self.ttft = Histogram(TTFT_BUCKETS)
        self.itl = Histogram(ITL_BUCKETS)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class Exposition:
    """Renders one engine's ``/metrics`` text."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        config = engine.config
        self.label = label = f'model_name="{_escape(config.model)}"'
        self.lora = bool(config.loras)
        self.max_lora = config.max_loras
        self.cache_info = (
            "# TYPE vllm:cache_config_info gauge\n"
            f'vllm:cache_config_info{{block_size="{config.block_size}",'
            f'num_gpu_blocks="{config.kv_blocks}",{label}}} 1.0\n'
        )
        self.ttft_les = [
            f'vllm:time_to_first_token_seconds_bucket{{le="{le}",{label}}} '
            for le in (*TTFT_BUCKETS, "+Inf")
        ]
        self.itl_les = [
            f'vllm:inter_token_latency_seconds_bucket{{le="{le}",{label}}} '
            for le in (*ITL_BUCKETS, "+Inf")
        ]

    def render(self) -> bytes:
        """The Prometheus text (format 0.0.4)."""
        engine = self.engine
        stats = engine.stats
        label = self.label
        out = [
            "# TYPE vllm:num_requests_running gauge\n",
            f"vllm:num_requests_running{{{label}}} {len(engine.running)}\n",
            "# TYPE vllm:num_requests_waiting gauge\n",
            f"vllm:num_requests_waiting{{{label}}} {len(engine.waiting)}\n",
            "# TYPE vllm:kv_cache_usage_perc gauge\n",
            f"vllm:kv_cache_usage_perc{{{label}}} {engine.kv.usage!r}\n",
            self.cache_info,
            "# TYPE vllm:prefix_cache_queries_total counter\n",
            f"vllm:prefix_cache_queries_total{{{label}}} {stats.prefix_queries}\n",
            "# TYPE vllm:prefix_cache_hits_total counter\n",
            f"vllm:prefix_cache_hits_total{{{label}}} {stats.prefix_hits}\n",
            "# TYPE vllm:prompt_tokens_total counter\n",
            f"vllm:prompt_tokens_total{{{label}}} {stats.prompt_tokens}\n",
            "# TYPE vllm:generation_tokens_total counter\n",
            f"vllm:generation_tokens_total{{{label}}} {stats.generation_tokens}\n",
            "# TYPE vllm:request_success_total counter\n",
        ]
        out += [
            f'vllm:request_success_total{{finished_reason="{reason}",{label}}} {count}\n'
            for reason, count in sorted(stats.finished.items())
        ]
        if self.lora:
            running = ",".join(sorted({s.adapter for s in engine.running if s.adapter}))
            waiting = ",".join(sorted({s.adapter for s in engine.waiting if s.adapter}))
            out += [
                "# TYPE vllm:lora_requests_info gauge\n",
                f'vllm:lora_requests_info{{max_lora="{self.max_lora}",'
                f'running_lora_adapters="{running}",waiting_lora_adapters="{waiting}"}} '
                f"{time.time()!r}\n",
            ]
        self._histogram(out, "vllm:time_to_first_token_seconds", stats.ttft, self.ttft_les)
        self._histogram(out, "vllm:inter_token_latency_seconds", stats.itl, self.itl_les)
        return "".join(out).encode()

    def _histogram(self, out: list[str], name: str, hist: Histogram, les: list[str]) -> None:
        out.append(f"# TYPE {name} histogram\n")
        total = 0
        for prefix, count in zip(les, hist.counts, strict=True):
            total += count
            out.append(f"{prefix}{total}\n")
        out.append(f"{name}_sum{{{self.label}}} {hist.sum!r}\n")
        out.append(f"{name}_count{{{self.label}}} {hist.count}\n")
