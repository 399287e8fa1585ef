"""The picker's settings for one pool, from its EndpointPicker resource or the defaults."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.duration import parse_duration
from inference_ext.api import EndpointPickerSpec, PoolRef
from inference_ext.picker.prefix import CHARS_PER_TOKEN
from inference_ext.picker.signals import MetricNames


@dataclass(frozen=True, slots=True)
class Weights:
    """Scorer weights (0 turns a scorer off)."""

    queue: float = 2.0
    kv_cache: float = 2.0
    prefix_cache: float = 3.0
    lora: float = 1.0
    inflight: float = 1.0


@dataclass(frozen=True, slots=True)
class PickerConfig:
    """Everything the scheduler reads (seconds, bytes, counts)."""

    names: MetricNames
    scrape_interval: float = 0.05
    stale_after: float = 2.0
    weights: Weights = Weights()
    block_bytes: int = 64 * CHARS_PER_TOKEN
    max_blocks: int = 128
    lru_capacity: int = 8192
    inflight_capacity: float = 16.0
    queue_threshold: float = 5.0
    kv_threshold: float = 0.8
    max_queued: int = 1024
    queue_ttl: float = 30.0
    fallbacks: int = 2
    picker_timeout: float = 5.0  # an external picker's decision (endpointPickerRef)


DEFAULT_SPEC = EndpointPickerSpec(pool_ref=PoolRef(name="-"))


def picker_config(spec: EndpointPickerSpec | None) -> PickerConfig:
    """A pool's settings (the defaults when it has no EndpointPicker)."""
    spec = spec or DEFAULT_SPEC
    m = spec.metrics
    s = spec.scorers
    return PickerConfig(
        names=MetricNames.preset(
            spec.engine,
            waiting=m.waiting,
            running=m.running,
            kv_cache=m.kv_cache,
            lora_info=m.lora_info,
            cache_config=m.cache_config,
        ),
        scrape_interval=parse_duration(spec.scrape_interval),
        stale_after=parse_duration(spec.stale_after),
        weights=Weights(s.queue, s.kv_cache, s.prefix_cache, s.lora, s.inflight),
        block_bytes=spec.prefix_cache.block_size_tokens * CHARS_PER_TOKEN,
        max_blocks=spec.prefix_cache.max_prefix_blocks,
        lru_capacity=spec.prefix_cache.lru_capacity_per_server,
        inflight_capacity=spec.inflight_capacity,
        queue_threshold=spec.saturation.queue_depth_threshold,
        kv_threshold=spec.saturation.kv_cache_util_threshold,
        max_queued=spec.flow_control.max_queued,
        queue_ttl=parse_duration(spec.flow_control.queue_ttl),
        fallbacks=spec.fallbacks,
        picker_timeout=parse_duration(spec.picker_timeout),
    )
