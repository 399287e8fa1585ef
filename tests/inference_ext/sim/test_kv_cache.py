"""The KV cache's block accounting: hits, pinning, LRU eviction, refusals."""

from __future__ import annotations

from inference_ext.sim.kv_cache import KvCache


def test_a_resident_prefix_is_a_hit_and_the_last_prompt_token_is_always_computed() -> None:
    kv = KvCache(total=20, block_size=16)
    assert kv.admit([1, 2, 3], prompt_tokens=50, blocks=4) == 0
    kv.release([1, 2, 3], blocks=4)
    assert kv.admit([1, 2, 9], prompt_tokens=50, blocks=4) == 32  # blocks 1 and 2
    kv.release([1, 2, 9], blocks=4)
    # 48 tokens = exactly 3 blocks, all resident: only 2 count, token 48 is computed again.
    assert kv.admit([1, 2, 3], prompt_tokens=48, blocks=3) == 32


def test_shared_prefix_blocks_are_pinned_once_and_counted_once() -> None:
    kv = KvCache(total=20, block_size=16)
    kv.admit([1, 2], prompt_tokens=40, blocks=4)  # 2 hashed + 2 private
    assert kv.used == 4
    assert kv.admit([1, 2], prompt_tokens=40, blocks=4) == 32
    assert kv.used == 6  # the two prefix blocks are shared
    kv.release([1, 2], blocks=4)
    assert kv.used == 4  # still pinned by the other sequence
    kv.release([1, 2], blocks=4)
    assert (kv.used, kv.free, kv.resident) == (0, 18, 2)


def test_admission_is_refused_without_enough_free_and_evictable_blocks() -> None:
    kv = KvCache(total=6, block_size=16)
    kv.admit([1, 2], prompt_tokens=40, blocks=4)
    assert kv.admit([7], prompt_tokens=20, blocks=3) is None
    assert (kv.used, kv.free) == (4, 2)  # a refusal changes nothing
    kv.release([1, 2], blocks=4)
    assert kv.admit([7], prompt_tokens=20, blocks=3) == 0  # 4 free now, no eviction needed
    assert kv.evictions == 0 and kv.resident == 3


def test_eviction_takes_idle_blocks_least_recently_used_first_tail_before_head() -> None:
    kv = KvCache(total=8, block_size=16)
    kv.admit([1, 2, 3], prompt_tokens=48, blocks=3)
    kv.release([1, 2, 3], blocks=3)
    kv.admit([4, 5], prompt_tokens=32, blocks=2)
    kv.release([4, 5], blocks=2)
    assert kv.free == 3
    kv.admit([6], prompt_tokens=80, blocks=5)  # 2 evictions: block 3 then 2 (A's tail)
    assert kv.evictions == 2
    kv.release([6], blocks=5)
    assert kv.admit([1, 2, 3], prompt_tokens=64, blocks=4) == 16  # only block 1 is left
    assert kv.admit([4, 5], prompt_tokens=48, blocks=3) == 32  # B survived whole
