"""``/metrics`` text parses with prometheus_client and says what the engine holds."""

from __future__ import annotations

import dataclasses

from prometheus_client.parser import text_string_to_metric_families

from inference_ext.sim.config import SimConfig
from inference_ext.sim.engine import Engine
from inference_ext.sim.metrics import Exposition
from tests.fixtures.sim import new_seq, prompt_text, run_engine

CONFIG = SimConfig(
    model="llama-3-8b",
    loras=("sql-v1", "sql-v2"),
    max_loras=1,
    max_num_seqs=2,
    kv_blocks=100,
    jitter=0.0,
)


def parse(engine: Engine) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    families = text_string_to_metric_families(Exposition(engine).render().decode())
    return {f.name: [(s.name, s.labels, s.value) for s in f.samples] for f in families}


def value(metrics: dict[str, list[tuple[str, dict[str, str], float]]], family: str) -> float:
    ((_, labels, number),) = metrics[family]
    assert labels == {"model_name": "llama-3-8b"}
    return number


def test_gauges_show_running_waiting_kv_usage_and_lora_adapters() -> None:
    sim = Engine(CONFIG)
    seqs = [
        new_seq(sim, prompt_text(40, "a"), 8, adapter="sql-v1"),
        new_seq(sim, prompt_text(40, "b"), 8, adapter="sql-v2"),
        new_seq(sim, prompt_text(40, "c"), 8),
        new_seq(sim, prompt_text(40, "d"), 8),
    ]
    for seq in seqs:
        sim.submit(seq, 0.0)
    sim.advance(0.0)
    metrics = parse(sim)
    assert value(metrics, "vllm:num_requests_running") == 2  # sql-v1 and the base model
    assert value(metrics, "vllm:num_requests_waiting") == 2
    assert value(metrics, "vllm:kv_cache_usage_perc") == sim.kv.used / 100 == 0.06
    ((_, labels, stamp),) = metrics["vllm:lora_requests_info"]
    assert labels == {
        "max_lora": "1",
        "running_lora_adapters": "sql-v1",
        "waiting_lora_adapters": "sql-v2",
    }
    assert stamp > 1.7e9  # a timestamp, as vLLM's
    ((_, labels, info),) = metrics["vllm:cache_config_info"]
    assert labels == {"block_size": "16", "num_gpu_blocks": "100", "model_name": "llama-3-8b"}
    assert info == 1.0


def test_counters_and_histograms_add_up_after_the_requests_finish() -> None:
    sim = Engine(CONFIG)
    text = prompt_text(80, "p")
    for max_new in (3, 5):
        sim.submit(new_seq(sim, text, max_new), run_engine(sim))
    run_engine(sim)
    metrics = parse(sim)
    assert value(metrics, "vllm:prompt_tokens") == 160
    assert value(metrics, "vllm:generation_tokens") == 8
    assert value(metrics, "vllm:prefix_cache_queries") == 160
    assert value(metrics, "vllm:prefix_cache_hits") == 64  # 4 of the 5 blocks, second time
    success = {s[1]["finished_reason"]: s[2] for s in metrics["vllm:request_success"]}
    assert success == {"abort": 0, "length": 0, "stop": 2}
    for family, count in (
        ("vllm:time_to_first_token_seconds", 2),
        ("vllm:inter_token_latency_seconds", 6),
    ):
        samples = {(name, labels.get("le")): number for name, labels, number in metrics[family]}
        assert samples[(f"{family}_count", None)] == count == samples[(f"{family}_bucket", "+Inf")]
        buckets = [n for (name, le), n in samples.items() if name.endswith("_bucket")]
        assert buckets == sorted(buckets)  # cumulative
    ttft = {name: number for name, _, number in metrics["vllm:time_to_first_token_seconds"]}
    assert ttft["vllm:time_to_first_token_seconds_sum"] == sim.stats.ttft.sum


def test_without_adapters_there_is_no_lora_info() -> None:
    sim = Engine(dataclasses.replace(CONFIG, loras=()))
    assert "vllm:lora_requests_info" not in parse(sim)
