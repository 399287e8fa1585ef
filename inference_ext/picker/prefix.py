"""The approximate prefix-cache index: which server probably holds a prompt's prefix in its KV
cache, learnt from the picks themselves (no events from the servers).

A prompt's bytes are cut into blocks of ``block_size_tokens x 4`` bytes (at ~4 characters a
token; 64 tokens by default, four of vLLM's 16-token KV blocks) and hashed in a chain — block
*i*'s hash covers every block before it and the model — so two prompts share a hash exactly
when they share the whole prefix up to that block. The index maps each hash to the servers it
was sent to; each server keeps an LRU of its hashes, as large as its KV cache holds such blocks
(from ``cache_config_info``, else a default), and forgets the oldest beyond it. A request's
score on a server is the fraction of its blocks, from the first, that the server has.

Python's ``hash`` of a tuple is the chain step: SipHash in C, ~0.2 µs a block (the per-block
overhead, not the bytes, is most of it: hence 64-token blocks); the index lives in one process,
so a per-process hash seed does no harm.
"""

from __future__ import annotations

from collections import OrderedDict

CHARS_PER_TOKEN = 4


def block_hashes(model: str, prompt: bytes, block_bytes: int, max_blocks: int) -> list[int]:
    """The chained hashes of the prompt's blocks (a trailing partial block included)."""
    if not prompt:
        return []
    hashes: list[int] = []
    previous = hash(model)
    end = min(len(prompt), block_bytes * max_blocks)
    for start in range(0, end, block_bytes):
        previous = hash((previous, prompt[start : start + block_bytes]))
        hashes.append(previous)
    return hashes


class PrefixIndex:
    """Block hash -> servers holding it, and each server's LRU of hashes."""

    __slots__ = ("_by_hash", "_default_capacity", "_lru", "capacities")

    def __init__(self, default_capacity: int) -> None:
        self._default_capacity = default_capacity
        self._by_hash: dict[int, set[str]] = {}
        self._lru: dict[str, OrderedDict[int, None]] = {}
        self.capacities: dict[str, int] = {}  # blocks a server's cache holds, when known

    def matches(self, hashes: list[int]) -> dict[str, int]:
        """How many leading blocks of ``hashes`` each server holds (servers with none left out).

        The servers still holding every block so far shrink by set operations in C; the loop
        is one dict lookup and one subset test per block while the same servers hold on.
        """
        by_hash = self._by_hash
        first = by_hash.get(hashes[0]) if hashes else None
        if not first:
            return {}
        alive = set(first)
        counts: dict[str, int] = {}
        depth = 1
        for digest in hashes[1:]:
            holders = by_hash.get(digest)
            if holders is None:
                break
            if not alive <= holders:
                for server in alive - holders:
                    counts[server] = depth
                alive &= holders
                if not alive:
                    break
            depth += 1
        for server in alive:
            counts[server] = depth
        return counts

    def add(self, server: str, hashes: list[int]) -> None:
        """``server`` served a request with these blocks: it now holds them (most recent)."""
        if not hashes:
            return
        lru = self._lru.get(server)
        if lru is None:
            lru = self._lru[server] = OrderedDict()
        by_hash = self._by_hash
        for digest in hashes:
            if digest in lru:
                lru.move_to_end(digest)
            else:
                lru[digest] = None
                holders = by_hash.get(digest)
                if holders is None:
                    by_hash[digest] = {server}
                else:
                    holders.add(server)
        capacity = self.capacities.get(server) or self._default_capacity
        while len(lru) > capacity:
            old, _ = lru.popitem(last=False)
            self._drop(old, server)

    def forget(self, server: str) -> None:
        """A server left the pool."""
        lru = self._lru.pop(server, None)
        for digest in lru or ():
            self._drop(digest, server)

    def size(self) -> int:
        """Block hashes indexed."""
        return len(self._by_hash)

    def _drop(self, digest: int, server: str) -> None:
        holders = self._by_hash.get(digest)
        if holders is not None:
            holders.discard(server)
            if not holders:
                del self._by_hash[digest]
