"""The pool scheduler's decisions, with the model servers' metrics given directly (no sockets):
load, prefix affinity, LoRA affinity, stale servers, subsets, retries, and flow control."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest

from gateway.backends.base import Endpoint
from inference_ext.picker.config import PickerConfig, Weights
from inference_ext.picker.scheduler import PoolScheduler, PoolView
from inference_ext.picker.signals import MetricNames
from inference_ext.request import InferenceRequest
from inference_ext.scheduling import NoCapacity, Shed
from tests.fixtures.route_config import Finished

SERVERS = [Endpoint(f"127.0.0.{i}", 8000) for i in (2, 3, 4)]
KEYS = [str(e) for e in SERVERS]
CONFIG = PickerConfig(names=MetricNames.preset("vllm"), queue_ttl=5.0, fallbacks=2)


def scheduler(
    config: PickerConfig = CONFIG, objectives: dict[str, int] | None = None
) -> PoolScheduler:
    view = PoolView(config, {str(e): e for e in SERVERS}, objectives or {})
    return PoolScheduler("default/pool", view)


def metrics(waiting: float = 0, kv: float = 0.1, running: str = "", max_lora: int = 0) -> bytes:
    return (
        f"vllm:num_requests_waiting {waiting}\nvllm:num_requests_running 1\n"
        f"vllm:kv_cache_usage_perc {kv}\n"
        f'vllm:lora_requests_info{{max_lora="{max_lora}",running_lora_adapters="{running}",'
        f'waiting_lora_adapters=""}} 1.0\n'
    ).encode()


def request(
    model: str = "llama", prompt: bytes = b"", priority: int = 0, **kw: object
) -> InferenceRequest:
    return InferenceRequest("r", model, prompt, priority=priority, **kw)  # type: ignore[arg-type]


def feed(s: PoolScheduler, *texts: bytes) -> None:
    for key, text in zip(KEYS, texts, strict=True):
        s.observe_metrics(key, text)


async def test_the_least_loaded_server_wins_and_the_rest_are_ordered_fallbacks() -> None:
    s = scheduler()
    feed(s, metrics(waiting=4), metrics(waiting=0, kv=0.2), metrics(waiting=2))
    chosen = await s.schedule(request())
    assert [str(e) for e in chosen] == [KEYS[1], KEYS[2], KEYS[0]]
    assert s.inflight[KEYS[1]] == 1
    s.served(request(), chosen[0], Finished())
    assert s.inflight[KEYS[1]] == 0


async def test_a_shared_prompt_prefix_goes_back_to_the_server_that_has_it() -> None:
    s = scheduler()
    feed(s, metrics(), metrics(), metrics())
    system = b'[{"role":"system","content":"' + b"policy " * 400 + b'"},'
    first = await s.schedule(request(prompt=system + b'{"role":"user","content":"a"}]'))
    for turn in range(5):  # equal loads otherwise: the prefix decides, every time
        again = await s.schedule(request(prompt=system + b'{"role":"user","content":"%d"}]' % turn))
        assert again[0] == first[0]
        s.served(request(), again[0], Finished())
    decision = s.decisions[-1]
    assert decision.matched_blocks >= decision.prefix_blocks - 1


async def test_load_outweighs_a_prefix_on_a_busy_server() -> None:
    s = scheduler()
    feed(s, metrics(), metrics(), metrics())
    prompt = b"x" * 4000
    first = (await s.schedule(request(prompt=prompt)))[0]
    busy = KEYS.index(str(first))
    loads = [metrics(waiting=4, kv=0.75) if i == busy else metrics() for i in range(3)]
    feed(s, *loads)
    assert (await s.schedule(request(prompt=prompt)))[0] != first


async def test_a_prefix_holder_past_the_kv_threshold_keeps_its_conversations() -> None:
    s = scheduler()
    feed(s, metrics(), metrics(), metrics())
    system = b'[{"role":"system","content":"' + b"policy " * 400 + b'"},'
    holder = (await s.schedule(request(prompt=system + b'{"role":"user","content":"a"}]')))[0]
    at = KEYS.index(str(holder))
    # The holder's cache is past the KV threshold (0.8), its queue empty: it keeps the
    # conversation's next turn; a prompt it does not hold goes to a server under the threshold.
    feed(s, *[metrics(kv=0.85) if i == at else metrics(kv=0.3) for i in range(3)])
    turn = system + b'{"role":"user","content":"a"},{"role":"user","content":"b"}]'
    assert (await s.schedule(request(prompt=turn)))[0] == holder
    for _ in range(5):
        assert (await s.schedule(request(prompt=b"other " * 700)))[0] != holder
    # Once its queue is full too, the holder is saturated: the conversation moves on.
    feed(s, *[metrics(waiting=5, kv=0.85) if i == at else metrics(kv=0.3) for i in range(3)])
    assert (await s.schedule(request(prompt=turn)))[0] != holder


async def test_an_adapter_goes_where_it_is_loaded() -> None:
    s = scheduler()
    feed(s, metrics(max_lora=2), metrics(running="sql-v1", max_lora=2), metrics(max_lora=2))
    assert str((await s.schedule(request(model="sql-v1")))[0]) == KEYS[1]
    # The base model is no adapter: the LoRA scorer stays out of it.
    assert s.decisions[-1].scores[KEYS[1]] > s.decisions[-1].scores[KEYS[0]]
    feed(s, metrics(), metrics(running="sql-v1", max_lora=2), metrics())
    await s.schedule(request(model="llama"))
    scores = s.decisions[-1].scores
    assert scores[KEYS[0]] == scores[KEYS[2]]


async def test_servers_with_stale_metrics_are_left_out_while_others_are_fresh() -> None:
    config = replace(CONFIG, stale_after=0.05)
    s = scheduler(config)
    feed(s, metrics(), metrics(), metrics())
    loop = asyncio.get_running_loop()
    for key in KEYS[:2]:
        s.signals[key].at = loop.time() - 1.0  # last scraped a second ago
    for _ in range(5):
        assert str((await s.schedule(request()))[0]) == KEYS[2]


async def test_the_subset_hint_and_the_endpoints_already_tried() -> None:
    s = scheduler()
    feed(s, metrics(), metrics(), metrics())
    only = await s.schedule(request(subset=frozenset({KEYS[2]})))
    assert [str(e) for e in only] == [KEYS[2]]
    with pytest.raises(NoCapacity, match="subset"):
        await s.schedule(request(subset=frozenset({"10.9.9.9:1"})))
    retried = await s.schedule(request(exclude=frozenset(KEYS[:2])))
    assert str(retried[0]) == KEYS[2]
    everything_tried = await s.schedule(request(exclude=frozenset(KEYS)))
    assert str(everything_tried[0]) in KEYS  # nothing untried: any


async def test_a_saturated_pool_sheds_sheddable_requests() -> None:
    s = scheduler()
    feed(s, metrics(waiting=9), metrics(waiting=9), metrics(waiting=9))
    assert s.saturation() >= 1.0
    with pytest.raises(Shed, match="saturated"):
        await s.schedule(request(priority=-1))
    assert s.shed == 1


async def test_waiting_requests_go_best_priority_first_when_capacity_frees() -> None:
    s = scheduler()
    feed(s, metrics(waiting=9), metrics(waiting=9), metrics(waiting=9))
    order: list[int] = []

    async def wanting(priority: int) -> None:
        await s.schedule(request(priority=priority))
        order.append(priority)

    tasks = [asyncio.ensure_future(wanting(p)) for p in (0, 5, 1)]
    await asyncio.sleep(0)  # one loop turn: all three are queued
    assert len(s.queue) == 3 and order == []
    feed(s, metrics(waiting=4), metrics(waiting=9), metrics(waiting=9))  # still saturated
    assert len(s.queue) == 3
    feed(s, metrics(), metrics(), metrics())  # capacity: the queue drains, best first
    await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert order == [5, 1, 0]


async def test_a_request_waits_no_longer_than_the_queue_ttl_nor_past_its_size() -> None:
    s = scheduler(replace(CONFIG, queue_ttl=0.05, max_queued=1))
    feed(s, metrics(waiting=9), metrics(waiting=9), metrics(waiting=9))
    waiting = asyncio.ensure_future(s.schedule(request()))
    await asyncio.sleep(0)
    with pytest.raises(Shed, match="already wait"):
        await s.schedule(request())
    with pytest.raises(NoCapacity, match="waited"):
        await asyncio.wait_for(waiting, 5)
    assert s.timed_out == 1 and len(s.queue) == 0


async def test_a_waiting_request_whose_client_left_leaves_the_queue() -> None:
    s = scheduler()
    feed(s, metrics(waiting=9), metrics(waiting=9), metrics(waiting=9))
    waiting = asyncio.ensure_future(s.schedule(request()))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    feed(s, metrics(), metrics(), metrics())
    assert not s.queue.release_one()  # nobody left to release


async def test_without_fresh_metrics_from_any_server_requests_are_admitted() -> None:
    s = scheduler()  # never scraped: its load cannot be known, so nothing waits
    assert s.saturation() >= 1.0
    chosen = await s.schedule(request())
    assert str(chosen[0]) in KEYS
    with pytest.raises(Shed):
        await s.schedule(request(priority=-1))  # stale counts as saturated for shedding


async def test_weights_turn_scorers_off() -> None:
    s = scheduler(replace(CONFIG, weights=Weights(0, 0, 0, 0, 0)))
    feed(s, metrics(waiting=4), metrics(), metrics(waiting=2))
    await s.schedule(request(prompt=b"p" * 1000))
    assert set(s.decisions[-1].scores.values()) == {0.0}
