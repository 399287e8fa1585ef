"""LoRA adapter slots, as vLLM's ``--max-loras``: a batch holds at most that many adapters."""

from __future__ import annotations


class LoraSlots:
    """Which adapters are loaded and how many running sequences use each."""

    def __init__(self, max_loras: int) -> None:
        self.max_loras = max_loras
        self.loaded: dict[str, int] = {}  # adapter -> running sequences; least recently used first
        self.loads = 0

    def acquire(self, adapter: str) -> bool | None:
        """Take a slot for a sequence of ``adapter``.

        True when the adapter had to be loaded (into a free slot, or in place of the least
        recently used adapter no running sequence needs), False when it was loaded already,
        None when every slot is busy with another adapter (the sequence waits).
        """
        loaded = self.loaded
        users = loaded.pop(adapter, None)
        if users is not None:
            loaded[adapter] = users + 1  # most recently used last
            return False
        if len(loaded) >= self.max_loras:
            idle = next((name for name, count in loaded.items() if count == 0), None)
            if idle is None:
                return None
            del loaded[idle]
        loaded[adapter] = 1
        self.loads += 1
        return True

    def can_acquire(self, adapter: str) -> bool:
        """Whether ``acquire(adapter)`` would succeed now."""
        loaded = self.loaded
        return (
            adapter in loaded
            or len(loaded) < self.max_loras
            or any(count == 0 for count in loaded.values())
        )

    def release(self, adapter: str) -> None:
        """A sequence of ``adapter`` finished; the adapter stays loaded until a slot is needed."""
        self.loaded[adapter] -= 1
