"""A paged KV cache's accounting, as vLLM keeps it: blocks, prefix hits, pinning, LRU eviction.

No tensors, only which blocks hold what. A prompt's full blocks are known by their chained
hashes (``tokenizer.Prompt.block_hashes``); every other block a sequence holds (its last partial
prompt block and its output) is private to it. Blocks of running sequences are pinned. When a
sequence finishes, its hashed blocks stay resident and evictable, least recently used first (the
tail of a prompt before its head, as vLLM frees them), and a later prompt that starts the same way
finds them. A sequence reserves every block it will need (prompt and output) when it is admitted,
so a running sequence never runs out and nothing is preempted; admission waits instead.
"""

from __future__ import annotations

from collections.abc import Sequence


class KvCache:
    """``total`` blocks of ``block_size`` tokens; usage is the share pinned by running sequences."""

    def __init__(self, total: int, block_size: int) -> None:
        self.total = total
        self.block_size = block_size
        self.free = total  # blocks holding nothing
        self._refs: dict[int, int] = {}  # resident hashed block -> running sequences using it
        self._idle: dict[int, None] = {}  # resident blocks nobody uses, least recently used first
        self.evictions = 0

    @property
    def used(self) -> int:
        """Blocks pinned by running sequences (a shared prefix block counts once)."""
        return self.total - self.free - len(self._idle)

    @property
    def usage(self) -> float:
        """``vllm:kv_cache_usage_perc``: used / total, 0..1."""
        return self.used / self.total

    @property
    def resident(self) -> int:
        """Hashed blocks in the cache, pinned or evictable."""
        return len(self._refs)

    def blocks_for(self, tokens: int) -> int:
        """Blocks that ``tokens`` tokens occupy."""
        return -(-tokens // self.block_size)

    def admit(self, hashes: Sequence[int], prompt_tokens: int, blocks: int) -> int | None:
        """Pin ``blocks`` blocks for a sequence whose full prompt blocks are ``hashes``.

        Returns the prompt tokens found cached (the leading resident blocks, at most
        ``prompt_tokens - 1``: as in vLLM, the last prompt token is always computed), or None,
        changing nothing, when the free and evictable blocks are too few.
        """
        refs = self._refs
        max_hits = (prompt_tokens - 1) // self.block_size
        hits = 0
        while hits < len(hashes) and hits < max_hits and hashes[hits] in refs:
            hits += 1
        reused = [h for h in hashes if h in refs]  # beyond the hits too: resident, recomputed
        reused_idle = sum(1 for h in reused if refs[h] == 0)
        fresh = blocks - len(reused)
        if fresh > self.free + len(self._idle) - reused_idle:
            return None
        idle = self._idle
        for h in reused:
            if refs[h] == 0:
                del idle[h]
            refs[h] += 1
        from_free = min(self.free, fresh)
        self.free -= from_free
        for _ in range(fresh - from_free):
            victim = next(iter(idle))
            del idle[victim]
            del refs[victim]
            self.evictions += 1
        for h in hashes:
            if h not in refs:
                refs[h] = 1
        return hits * self.block_size

    def release(self, hashes: Sequence[int], blocks: int) -> None:
        """Unpin a finished sequence's ``blocks``; its hashed blocks stay cached, evictable."""
        refs = self._refs
        for h in reversed(hashes):
            count = refs[h] - 1
            refs[h] = count
            if count == 0:
                self._idle[h] = None
        self.free += blocks - len(hashes)
