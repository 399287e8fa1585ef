"""The approximate prefix-cache index: chained block hashes, leading matches, LRU per server."""

from __future__ import annotations

from inference_ext.picker.prefix import PrefixIndex, block_hashes

SYSTEM = b"You are a careful assistant. " * 20  # 580 bytes: 9 blocks of 64 and a partial one


def test_hashes_are_chained_so_only_a_shared_prefix_shares_hashes() -> None:
    a = block_hashes("m", SYSTEM + b"question one", 64, 256)
    b = block_hashes("m", SYSTEM + b"another question", 64, 256)
    assert a[:9] == b[:9] and a[9] != b[9]
    # The same block after a different prefix hashes differently.
    shifted = block_hashes("m", b"x" * 64 + SYSTEM, 64, 256)
    assert not set(shifted) & set(a)
    assert block_hashes("other-model", SYSTEM, 64, 256)[0] != a[0]
    assert len(block_hashes("m", b"y" * 10_000, 64, 16)) == 16  # capped at max_blocks
    assert block_hashes("m", b"", 64, 256) == []


def test_matches_count_leading_blocks_per_server() -> None:
    index = PrefixIndex(default_capacity=1000)
    full = block_hashes("m", SYSTEM + b"q", 64, 256)
    index.add("a", full)
    index.add("b", full[:3])
    assert index.matches(full) == {"a": len(full), "b": 3}
    unrelated = block_hashes("m", b"z" * 640, 64, 256)
    assert index.matches(unrelated) == {}


def test_each_server_forgets_its_least_recent_blocks_beyond_its_capacity() -> None:
    index = PrefixIndex(default_capacity=4)
    first = block_hashes("m", b"a" * 256, 64, 256)  # 4 blocks
    second = block_hashes("m", b"b" * 128, 64, 256)  # 2 blocks
    index.add("s", first)
    index.add("s", second)  # 6 blocks > 4: the oldest two of `first` go
    assert index.matches(first) == {}
    assert index.matches(second) == {"s": 2}
    index.capacities["s"] = 100
    index.add("s", first)
    assert index.matches(first) == {"s": 4}
    index.forget("s")
    assert index.matches(second) == {} and index.size() == 0
