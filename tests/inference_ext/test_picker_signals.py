"""What the picker reads of a model server's metrics: the same values prometheus_client reads."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from inference_ext.picker.signals import MetricNames, MetricsParseError, Signals, read_signals

VLLM = (
    b"""# HELP vllm:num_requests_waiting Requests waiting.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="llama"} 3.0
vllm:num_requests_waiting{model_name="sql-v1"} 1.0
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="llama"} 8
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{model_name="llama"} 0.42
# TYPE vllm:lora_requests_info gauge
vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-v1",waiting_lora_adapters=""} 1.7e9
"""
    b'vllm:lora_requests_info{max_lora="2",running_lora_adapters="sql-v1,sql-v2",'
    b'waiting_lora_adapters="x"} 1.8e9\n'
    b"""# TYPE vllm:cache_config_info gauge
vllm:cache_config_info{block_size="16",num_gpu_blocks="2048"} 1.0
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="llama"} 4.0
vllm:time_to_first_token_seconds_count{model_name="llama"} 4.0
"""
)


def test_vllm_signals_match_prometheus_clients_reading() -> None:
    signals = Signals()
    read_signals(VLLM, MetricNames.preset("vllm"), signals)
    families = {f.name: f for f in text_string_to_metric_families(VLLM.decode())}
    waiting = sum(s.value for s in families["vllm:num_requests_waiting"].samples)
    assert signals.waiting == waiting == 4.0
    assert signals.running == 8.0
    assert signals.kv_cache == 0.42
    newest = max(families["vllm:lora_requests_info"].samples, key=lambda s: s.value)
    assert signals.lora_running == frozenset(newest.labels["running_lora_adapters"].split(","))
    assert signals.lora_waiting == frozenset({"x"}) and signals.max_lora == 2
    assert (signals.block_size, signals.num_blocks) == (16, 2048)


def test_other_engines_and_overridden_names() -> None:
    text = b"sglang:num_queue_reqs 2\nsglang:num_running_reqs 5\nsglang:token_usage 0.5\n"
    signals = Signals()
    read_signals(text, MetricNames.preset("sglang"), signals)
    assert (signals.waiting, signals.running, signals.kv_cache) == (2.0, 5.0, 0.5)
    custom = MetricNames.preset("vllm", waiting="my_queue")
    read_signals(b"my_queue 7\nvllm:num_requests_waiting 1\n", custom, signals)
    assert signals.waiting == 7.0


def test_a_series_without_a_number_is_an_error() -> None:
    with pytest.raises(MetricsParseError, match="bad value"):
        read_signals(b"vllm:num_requests_waiting nope\n", MetricNames.preset("vllm"), Signals())
