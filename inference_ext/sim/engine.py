"""The simulated engine: continuous batching over a paged KV cache, without sockets or clocks.

Sans-IO: the caller passes the time (``now``, in seconds) to every call and runs ``advance`` at
``wake_at``. One *step* gives one token to every sequence in the batch. A step starts by
admitting waiting sequences in arrival order while there are free batch slots, KV blocks and
LoRA slots (a sequence whose adapter has no slot is passed over, as vLLM does; one whose blocks
do not fit stops admission). Its duration is

    loads x lora_load + sum(prefill_overhead + prefill_per_token x uncached prompt tokens)
        + itl x (1 + itl_load_factor x (batch - 1) / (max_num_seqs - 1))   [if any sequence decodes]

times a Gaussian jitter factor (``jitter`` is its standard deviation, clamped to 0.3..1.7),
every term multiplied by ``time_scale``. At the step's end each sequence of the batch has its
next token: a sequence admitted in the step its first (so a lone request's time to first token is
its prefill), the others their next. A sequence that finishes frees its batch slot and unpins its
KV blocks; its prompt's blocks stay cached.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable
from enum import Enum
from typing import Protocol

from inference_ext.sim.config import SimConfig
from inference_ext.sim.kv_cache import KvCache
from inference_ext.sim.lora import LoraSlots
from inference_ext.sim.metrics import EngineStats
from inference_ext.sim.tokenizer import Prompt


class ContextTooLong(ValueError):
    """A request that could never fit in the KV cache, however long it waited."""


class SeqState(Enum):
    """Where a sequence is."""

    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


class TokenSink(Protocol):
    """Receives a sequence's tokens as the engine produces them (the HTTP response writer)."""

    def on_token(self, seq: Sequence, now: float) -> None:
        """``seq.generated`` tokens exist now (the newest is token ``seq.generated - 1``)."""

    def on_finish(self, seq: Sequence, now: float) -> None:
        """The sequence is done: ``seq.finish_reason`` says why."""


class Sequence:
    """One request in the engine: what it asks for, and its schedule as the engine computed it."""

    __slots__ = (
        "adapter",
        "admitted_at",
        "arrival",
        "blocks",
        "cached_tokens",
        "finish_reason",
        "finished_at",
        "first_token_at",
        "generated",
        "last_token_at",
        "lora_loaded",
        "max_new",
        "prompt",
        "request_id",
        "resume_at",
        "sink",
        "stall_after",
        "stall_s",
        "stalled_s",
        "state",
    )

    def __init__(
        self,
        prompt: Prompt,
        max_new: int,
        sink: TokenSink,
        adapter: str | None = None,
        *,
        finish_reason: str = "stop",
        stall_after: int = 0,
        stall_s: float = 0.0,
        request_id: str = "",
    ) -> None:
        self.prompt = prompt
        self.max_new = max_new
        self.sink = sink
        self.adapter = adapter
        self.finish_reason = finish_reason  # when it reaches max_new: "stop" or "length"
        self.stall_after = stall_after  # stop sending after this many tokens (0: never) ...
        self.stall_s = stall_s  # ... for this long
        self.request_id = request_id
        self.state = SeqState.WAITING
        self.arrival = 0.0
        self.admitted_at = 0.0
        self.first_token_at = 0.0
        self.last_token_at = 0.0
        self.finished_at = 0.0
        self.generated = 0
        self.cached_tokens = 0
        self.blocks = 0
        self.lora_loaded = False  # its admission paid for loading its adapter
        self.resume_at = 0.0  # while stalled: when it may have tokens again
        self.stalled_s = 0.0


class Engine:
    """One model server's scheduler and cost model; ``advance(now)`` at ``wake_at``."""

    def __init__(self, config: SimConfig, seed: int | str = 0) -> None:
        self.config = config
        self.kv = KvCache(config.kv_blocks, config.block_size)
        self.loras = LoraSlots(config.max_loras)
        self.stats = EngineStats()
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.wake_at: float | None = None
        # Called with every sequence that finished or was aborted (benchmarks read schedules).
        self.on_finish: Callable[[Sequence], None] | None = None
        self._rng = random.Random(seed)
        scale = config.time_scale / 1000
        self._lora_load = config.lora_load_ms * scale
        self._prefill_overhead = config.prefill_overhead_ms * scale
        self._prefill_per_token = config.prefill_ms_per_token * scale
        self._itl = config.itl_ms * scale
        self._itl_slope = (
            config.itl_load_factor / (config.max_num_seqs - 1) if config.max_num_seqs > 1 else 0.0
        )
        self._batch: list[Sequence] = []
        self._step_start = 0.0
        self._step_end: float | None = None
        self._stalled = 0

    # -- requests ------------------------------------------------------------------------------

    def submit(self, seq: Sequence, now: float) -> None:
        """Queue ``seq``; it is admitted at the next step (right away when the engine is idle)."""
        if seq.max_new < 1 or seq.prompt.tokens < 1:
            raise ValueError("a sequence needs a prompt and at least one token to generate")
        blocks = self.kv.blocks_for(seq.prompt.tokens + seq.max_new)
        if blocks > self.kv.total:
            limit = self.config.max_model_len
            raise ContextTooLong(
                f"this model's maximum context length is {limit} tokens; the request needs "
                f"{seq.prompt.tokens + seq.max_new} ({seq.prompt.tokens} in the prompt, "
                f"{seq.max_new} to generate)"
            )
        seq.blocks = blocks
        seq.arrival = now
        self.waiting.append(seq)
        self._wake_if_idle(now)

    def abort(self, seq: Sequence, now: float) -> None:
        """The client left: drop ``seq`` wherever it is, freeing what it held."""
        if seq.state is SeqState.WAITING:
            self.waiting.remove(seq)
        elif seq.state is SeqState.RUNNING:
            self.running.remove(seq)
            if seq.resume_at:
                self._stalled -= 1
            self._release(seq)
            self._wake_if_idle(now)
        else:
            return
        seq.state = SeqState.ABORTED
        seq.finish_reason = "abort"
        self._done(seq, now)

    def advance(self, now: float) -> None:
        """End the step in flight if it is due, then plan the next one; sets ``wake_at``."""
        if self._step_end is not None:
            if now < self._step_end:
                return
            self._finish_step(now)
        self._plan(now)

    @property
    def stepping(self) -> bool:
        """Whether a step is in flight."""
        return self._step_end is not None

    def step_time(self, batch: int, admitted: list[Sequence], loads: int) -> float:
        """A step's duration before jitter: ``batch`` sequences, ``admitted`` new among them."""
        prefill = sum(
            self._prefill_overhead
            + self._prefill_per_token * (seq.prompt.tokens - seq.cached_tokens)
            for seq in admitted
        )
        decode = self._itl * (1 + self._itl_slope * (batch - 1)) if batch > len(admitted) else 0.0
        return loads * self._lora_load + prefill + decode

    # -- the step ------------------------------------------------------------------------------

    def _wake_if_idle(self, now: float) -> None:
        if self._step_end is None and (self.wake_at is None or self.wake_at > now):
            self.wake_at = now

    def _admit(self, now: float) -> tuple[list[Sequence], int]:
        waiting, running = self.waiting, self.running
        room = self.config.max_num_seqs - len(running)
        admitted: list[Sequence] = []
        passed: list[Sequence] = []
        loads = 0
        kv, loras, stats = self.kv, self.loras, self.stats
        while waiting and len(admitted) < room:
            seq = waiting[0]
            adapter = seq.adapter
            if adapter is not None and not loras.can_acquire(adapter):
                passed.append(waiting.popleft())
                continue
            cached = kv.admit(seq.prompt.block_hashes, seq.prompt.tokens, seq.blocks)
            if cached is None:
                break
            waiting.popleft()
            if adapter is not None and loras.acquire(adapter):
                seq.lora_loaded = True
                loads += 1
            seq.cached_tokens = cached
            seq.admitted_at = now
            seq.state = SeqState.RUNNING
            stats.prompt_tokens += seq.prompt.tokens
            stats.prefix_queries += seq.prompt.tokens
            stats.prefix_hits += cached
            admitted.append(seq)
        if passed:
            waiting.extendleft(reversed(passed))
        running += admitted
        return admitted, loads

    def _plan(self, now: float) -> None:
        admitted, loads = self._admit(now)
        if self._stalled:
            batch = []
            for seq in self.running:
                if seq.resume_at:
                    if seq.resume_at > now:
                        continue
                    seq.stalled_s += now - seq.last_token_at
                    seq.resume_at = 0.0
                    self._stalled -= 1
                batch.append(seq)
        else:
            batch = self.running.copy()
        if not batch:
            self._step_end = None
            stalled = [seq.resume_at for seq in self.running if seq.resume_at]
            self.wake_at = min(stalled) if stalled else None
            return
        duration = self.step_time(len(batch), admitted, loads)
        jitter = self.config.jitter
        if jitter:
            duration *= min(1.7, max(0.3, self._rng.gauss(1.0, jitter)))
        self._batch = batch
        self._step_start = now
        self._step_end = self.wake_at = now + duration

    def _finish_step(self, now: float) -> None:
        batch, start = self._batch, self._step_start
        self._batch = []
        self._step_end = None
        stats = self.stats
        stats.steps += 1
        ttft, itl = stats.ttft, stats.itl
        same_gap = tokens = 0
        finished = False
        running = SeqState.RUNNING
        for seq in batch:
            if seq.state is not running:
                continue  # aborted during the step
            generated = seq.generated = seq.generated + 1
            tokens += 1
            if generated == 1:
                seq.first_token_at = now
                ttft.observe(now - seq.arrival)
            elif seq.last_token_at == start:
                same_gap += 1
            else:
                itl.observe(now - seq.last_token_at)
            seq.last_token_at = now
            seq.sink.on_token(seq, now)
            if generated >= seq.max_new:
                seq.state = SeqState.FINISHED
                self._release(seq)
                self._done(seq, now)
                finished = True
            elif generated == seq.stall_after:
                seq.resume_at = now + seq.stall_s
                self._stalled += 1
                stats.stalls += 1
        if same_gap:
            itl.observe(now - start, same_gap)
        stats.generation_tokens += tokens
        if finished:
            self.running = [seq for seq in self.running if seq.state is running]

    def _release(self, seq: Sequence) -> None:
        self.kv.release(seq.prompt.block_hashes, seq.blocks)
        if seq.adapter is not None:
            self.loras.release(seq.adapter)

    def _done(self, seq: Sequence, now: float) -> None:
        seq.finished_at = now
        finished = self.stats.finished
        finished[seq.finish_reason] = finished.get(seq.finish_reason, 0) + 1
        seq.sink.on_finish(seq, now)
        if self.on_finish is not None:
            self.on_finish(seq)
