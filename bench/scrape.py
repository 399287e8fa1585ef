"""Reading a model server's metrics for the endpoint picker: our reader against prometheus_client.

Run ``python -m bench.scrape``. The picker scrapes every server of a pool every 50 ms: 16 servers
are 320 expositions a second per gateway process. Each is read two ways, from the same bytes:

* ours: ``inference_ext.picker.signals.read_signals`` (one split into lines; only the wanted
  series' values, and the labels of the LoRA and cache-config info series, are decoded);
* the reference: ``prometheus_client.parser.text_string_to_metric_families`` over the decoded
  text, walking every sample to pick the same five signals (what a picker built on the library
  does).

Expositions: ``sim`` is what ``ambient sim`` serves (one model, two LoRA adapters, its TTFT and
inter-token histograms); ``vllm`` is shaped like a real vLLM server's (~150 series: per-model
counters and gauges, a dozen histograms of 10-30 buckets, a ``model_name`` label on each), built
here with the same names. Before timing, both readers' signals are compared; a difference stops
the run. Figures are medians of ``--rounds`` passes, readers interleaved; the garbage collector
is off during a pass. ``speedup`` is the reference's time over ours; ``core at 16 x 20/s`` is
the share of one core each reader would need to follow a 16-server pool.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from inference_ext.picker.signals import MetricNames, Signals, read_signals
from inference_ext.sim.config import SimConfig
from inference_ext.sim.server import start_sims

NAMES = MetricNames.preset("vllm")
SCRAPES_PER_SECOND = 16 * 20  # 16 servers every 50 ms


def reference(text: bytes, names: MetricNames) -> Signals:
    """The five signals through prometheus_client's parser."""
    out = Signals()
    waiting = running = kv = 0.0
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            name = sample.name
            if name == names.waiting:
                waiting += sample.value
            elif name == names.running:
                running += sample.value
            elif name == names.kv_cache:
                kv = max(kv, sample.value)
            elif name == names.lora_info:
                labels = sample.labels
                out.lora_running = _csv(labels.get("running_lora_adapters", ""))
                out.lora_waiting = _csv(labels.get("waiting_lora_adapters", ""))
                out.max_lora = int(labels.get("max_lora", "0") or 0)
            elif name == names.cache_config:
                out.block_size = int(sample.labels.get("block_size", "0"))
                out.num_blocks = int(sample.labels.get("num_gpu_blocks", "0"))
    out.waiting, out.running, out.kv_cache = waiting, running, kv
    return out


def _csv(value: str) -> frozenset[str]:
    return frozenset(part for part in value.split(",") if part)


def ours(text: bytes, names: MetricNames) -> Signals:
    out = Signals()
    read_signals(text, names, out)
    return out


async def sim_exposition() -> bytes:
    """``ambient sim``'s /metrics after a few requests (so histograms have counts)."""
    config = SimConfig(host="127.0.0.2", port=0, loras=("sql-v1", "sql-v2"), time_scale=0.001)
    (server,) = await start_sims(config, 1)
    try:
        reader, writer = await asyncio.open_connection(server.address, server.port)
        body = b'{"model":"sql-v1","messages":[{"role":"user","content":"hi"}],"max_tokens":4}'
        for _ in range(5):
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: sim\r\nContent-Type: "
                b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            await _read_response(reader)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: sim\r\n\r\n")
        text = await _read_response(reader)
        writer.close()
        return text
    finally:
        await server.close()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":", 1)[1])
    return await reader.readexactly(length)


def vllm_exposition() -> bytes:
    """An exposition shaped like a vLLM server's (names from vLLM's metrics docs)."""
    label = 'engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"'
    lines: list[str] = []

    def gauge(name: str, value: float, extra: str = "") -> None:
        lines.append(f"# HELP {name} {name}.\n# TYPE {name} gauge")
        lines.append(f"{name}{{{extra}{label}}} {value}")

    def counter(name: str, value: float) -> None:
        lines.append(f"# HELP {name} {name}.\n# TYPE {name} counter")
        lines.append(f"{name}_total{{{label}}} {value}")
        lines.append(f"{name}_created{{{label}}} 1.7e9")

    def histogram(name: str, bounds: list[float]) -> None:
        lines.append(f"# HELP {name} {name}.\n# TYPE {name} histogram")
        running = 0
        for i, bound in enumerate(bounds):
            running += i
            lines.append(f'{name}_bucket{{{label},le="{bound}"}} {float(running)}')
        lines.append(f'{name}_bucket{{{label},le="+Inf"}} {float(running)}')
        lines.append(f"{name}_count{{{label}}} {float(running)}")
        lines.append(f"{name}_sum{{{label}}} {running * 0.37}")
        lines.append(f"{name}_created{{{label}}} 1.7e9")

    gauge("vllm:num_requests_running", 12)
    gauge("vllm:num_requests_waiting", 3)
    gauge("vllm:kv_cache_usage_perc", 0.61)
    lines.append("# HELP vllm:lora_requests_info LoRA.\n# TYPE vllm:lora_requests_info gauge")
    lines.append(
        'vllm:lora_requests_info{max_lora="4",running_lora_adapters="sql-v1,sql-v2",'
        'waiting_lora_adapters=""} 1.7e9'
    )
    gauge(
        "vllm:cache_config_info",
        1.0,
        'block_size="16",cache_dtype="auto",enable_prefix_caching="True",gpu_memory_utilization='
        '"0.9",num_cpu_blocks="2048",num_gpu_blocks="27000",',
    )
    for name in (
        "vllm:num_preemptions",
        "vllm:prompt_tokens",
        "vllm:generation_tokens",
        "vllm:prefix_cache_queries",
        "vllm:prefix_cache_hits",
    ):
        counter(name, 123456)
    for reason in ("stop", "length", "abort"):
        lines.append(f'vllm:request_success_total{{finished_reason="{reason}",{label}}} 99')
    latency = [0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0]  # fmt: skip
    tokens = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000]
    for name in (
        "vllm:time_to_first_token_seconds",
        "vllm:inter_token_latency_seconds",
        "vllm:e2e_request_latency_seconds",
        "vllm:request_queue_time_seconds",
        "vllm:request_inference_time_seconds",
        "vllm:request_prefill_time_seconds",
        "vllm:request_decode_time_seconds",
    ):
        histogram(name, latency)
    for name in (
        "vllm:request_prompt_tokens",
        "vllm:request_generation_tokens",
        "vllm:request_max_num_generation_tokens",
        "vllm:request_params_n",
        "vllm:request_params_max_tokens",
        "vllm:iteration_tokens_total",
    ):
        histogram(name, [float(t) for t in tokens])
    return ("\n".join(lines) + "\n").encode()


def _time(read: Callable[[bytes, MetricNames], Signals], text: bytes, n: int) -> float:
    """Seconds per read, over ``n`` reads with the collector off."""
    gc.disable()
    try:
        started = time.perf_counter()
        for _ in range(n):
            read(text, NAMES)
        return (time.perf_counter() - started) / n
    finally:
        gc.enable()


def _same(a: Signals, b: Signals) -> bool:
    fields = ("waiting", "running", "kv_cache", "lora_running", "lora_waiting", "max_lora")
    fields += ("block_size", "num_blocks")
    return all(getattr(a, f) == getattr(b, f) for f in fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=400, help="reads per reader and pass")
    args = parser.parse_args()

    expositions = {"sim": asyncio.run(sim_exposition()), "vllm": vllm_exposition()}
    print(f"{'exposition':<11}{'bytes':>7}{'ours µs':>10}{'prometheus_client µs':>22}"
          f"{'speedup':>9}{'core at 16 x 20/s: ours':>26}{'reference':>11}")  # fmt: skip
    for label, text in expositions.items():
        mine, theirs = ours(text, NAMES), reference(text, NAMES)
        if not _same(mine, theirs):
            raise SystemExit(f"{label}: readers disagree:\n ours {mine}\n ref  {theirs}")
        ours_runs, ref_runs = [], []
        for _ in range(args.rounds):
            ours_runs.append(_time(ours, text, args.reads))
            ref_runs.append(_time(reference, text, max(1, args.reads // 10)))
        mine_s, ref_s = statistics.median(ours_runs), statistics.median(ref_runs)
        print(
            f"{label:<11}{len(text):>7}{mine_s * 1e6:>10.1f}{ref_s * 1e6:>22.1f}"
            f"{ref_s / mine_s:>8.1f}x{mine_s * SCRAPES_PER_SECOND:>25.1%}"
            f"{ref_s * SCRAPES_PER_SECOND:>11.1%}"
        )


if __name__ == "__main__":
    main()
