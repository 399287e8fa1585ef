"""The engine on a virtual clock: every assertion is on the schedule the engine computed."""

from __future__ import annotations

import dataclasses
import itertools

import pytest

from inference_ext.sim.config import SimConfig
from inference_ext.sim.engine import ContextTooLong, Engine, SeqState
from tests.fixtures.sim import new_seq, prompt_text, run_engine, tokens_of

# No jitter, round numbers (ms): prefill = 10 + 1 x uncached tokens, ITL 5 ms x (1 + (n-1)/3).
BASE = SimConfig(
    jitter=0.0,
    prefill_overhead_ms=10,
    prefill_ms_per_token=1,
    itl_ms=5,
    itl_load_factor=1,
    max_num_seqs=4,
    kv_blocks=256,
    lora_load_ms=7,
    loras=("sql-v1", "sql-v2"),
)


def engine(**changes: object) -> Engine:
    return Engine(dataclasses.replace(BASE, **changes))  # type: ignore[arg-type]


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


def test_a_lone_request_gets_its_prefill_as_ttft_then_one_itl_per_token() -> None:
    sim = engine()
    seq = new_seq(sim, prompt_text(100, "a"), 4)
    sim.submit(seq, 0.0)
    run_engine(sim)
    times = tokens_of(seq).times
    assert times[0] == pytest.approx(0.010 + 0.100)
    assert gaps(times) == pytest.approx([0.005] * 3)
    assert seq.state is SeqState.FINISHED and seq.finished_at == times[-1]
    assert sim.stats.generation_tokens == 4 and sim.stats.finished["stop"] == 1


def test_a_repeated_prefix_shortens_ttft_by_exactly_the_cached_tokens_prefill() -> None:
    document = prompt_text(200, "doc")
    question = document[: 8 * 64] + prompt_text(40, "q")  # 8 blocks of the document, 168 tokens

    cold = engine()
    cold_seq = new_seq(cold, question, 2)
    cold.submit(cold_seq, 0.0)
    run_engine(cold)

    warm = engine()
    first = new_seq(warm, document, 2)
    warm.submit(first, 0.0)
    done = run_engine(warm)
    warm_seq = new_seq(warm, question, 2)
    warm.submit(warm_seq, done)
    run_engine(warm)

    assert (cold_seq.cached_tokens, warm_seq.cached_tokens) == (0, 128)
    cold_ttft = cold_seq.first_token_at - cold_seq.arrival
    warm_ttft = warm_seq.first_token_at - warm_seq.arrival
    assert cold_ttft == pytest.approx(0.010 + 0.168)
    assert cold_ttft - warm_ttft == pytest.approx(128 * 0.001)
    assert (warm.stats.prefix_queries, warm.stats.prefix_hits) == (200 + 168, 128)


def test_the_same_text_on_another_adapter_is_not_a_prefix_hit() -> None:
    sim = engine(max_loras=2)
    text = prompt_text(64, "shared")
    base = new_seq(sim, text, 1)
    sim.submit(base, 0.0)
    done = run_engine(sim)
    adapted = new_seq(sim, text, 1, adapter="sql-v1")
    again = new_seq(sim, text, 1)
    sim.submit(adapted, done)
    sim.submit(again, done)
    run_engine(sim)
    assert adapted.cached_tokens == 0
    assert again.cached_tokens == 48  # 3 of 4 blocks: the last prompt token is always computed


def test_max_num_seqs_runs_that_many_and_the_rest_wait_in_order() -> None:
    sim = engine(max_num_seqs=2)
    seqs = [new_seq(sim, prompt_text(20, f"r{i}"), 3) for i in range(5)]
    for seq in seqs:
        sim.submit(seq, 0.0)
    sim.advance(0.0)
    assert (len(sim.running), len(sim.waiting)) == (2, 3)
    assert [seq.state for seq in seqs] == [SeqState.RUNNING] * 2 + [SeqState.WAITING] * 3

    batch_sizes = []
    sim.on_finish = lambda seq: batch_sizes.append(len(sim.running))
    run_engine(sim)
    assert max(batch_sizes) <= 2
    admitted = [seq.admitted_at for seq in seqs]
    assert admitted == sorted(admitted) and admitted[2] == seqs[0].finished_at
    assert all(seq.state is SeqState.FINISHED for seq in seqs)


def test_itl_rises_with_the_batch_as_the_load_factor_says() -> None:
    alone = engine()
    solo = new_seq(alone, prompt_text(10, "x"), 5)
    alone.submit(solo, 0.0)
    run_engine(alone)

    full = engine()
    batch = [new_seq(full, prompt_text(10, f"y{i}"), 5) for i in range(4)]
    for seq in batch:
        full.submit(seq, 0.0)
    run_engine(full)

    assert gaps(tokens_of(solo).times) == pytest.approx([0.005] * 4)
    # A full batch (4 of 4): 5 ms x (1 + 1 x 3/3).
    assert gaps(tokens_of(batch[0]).times) == pytest.approx([0.010] * 4)
    assert full.stats.itl.count == 16 and full.stats.itl.sum == pytest.approx(16 * 0.010)


def test_a_newly_admitted_prefill_delays_the_step_of_the_running_sequences() -> None:
    sim = engine()
    running = new_seq(sim, prompt_text(10, "run"), 4)
    sim.submit(running, 0.0)
    arrival = run_engine(sim, until=0.021)  # its first token came at 0.020; the next step runs
    newcomer = new_seq(sim, prompt_text(50, "new"), 1)
    sim.submit(newcomer, arrival)
    run_engine(sim)
    times = tokens_of(running).times
    # The newcomer waits for the step in flight, then the step that admits it lasts its prefill
    # (10 + 50 ms) plus the ITL of a batch of 2; the step after is a batch of 1 again.
    assert gaps(times) == pytest.approx([0.005, 0.060 + 0.005 * (1 + 1 / 3), 0.005])
    assert newcomer.admitted_at == times[1] and newcomer.first_token_at == times[2]


def test_admission_waits_for_kv_blocks_and_usage_is_pinned_over_total() -> None:
    sim = engine(kv_blocks=10)
    big = new_seq(sim, prompt_text(100, "big"), 28)  # 128 tokens: 8 blocks
    small = new_seq(sim, prompt_text(40, "small"), 24)  # 64 tokens: 4 blocks, 12 > 10
    sim.submit(big, 0.0)
    sim.submit(small, 0.0)
    sim.advance(0.0)
    assert (len(sim.running), len(sim.waiting)) == (1, 1)
    assert sim.kv.usage == pytest.approx(8 / 10)
    run_engine(sim)
    assert small.admitted_at == big.finished_at
    assert sim.kv.usage == 0.0


def test_a_request_larger_than_the_whole_cache_or_with_nothing_to_do_is_refused() -> None:
    sim = engine(kv_blocks=4)
    with pytest.raises(ContextTooLong, match="maximum context length is 64 tokens"):
        sim.submit(new_seq(sim, prompt_text(60, "long"), 10), 0.0)
    with pytest.raises(ValueError, match="at least one token to generate"):
        sim.submit(new_seq(sim, prompt_text(10, "none"), 0), 0.0)
    assert not sim.waiting and sim.wake_at is None


def test_lru_eviction_takes_the_least_recently_used_prefix_tail_first() -> None:
    sim = engine(kv_blocks=12)
    a_text, b_text = prompt_text(64, "A"), prompt_text(64, "B")
    now = 0.0
    for text, new in ((a_text, 16), (b_text, 16), (prompt_text(64, "C"), 32)):
        sim.submit(new_seq(sim, text, new), now)  # 5, 5 and 6 blocks, one after the other
        now = run_engine(sim)
    assert sim.kv.evictions == 2  # C needed 6 blocks with 4 free: two of A's, the oldest
    a_again, b_again = new_seq(sim, a_text, 1), new_seq(sim, b_text, 1)
    sim.submit(a_again, now)
    now = run_engine(sim)
    sim.submit(b_again, now)
    run_engine(sim)
    assert a_again.cached_tokens == 32  # A's blocks 0 and 1 survived; its tail (2, 3) went first
    assert b_again.cached_tokens == 48  # B untouched (3 of 4 blocks count: the last is computed)


def test_an_adapter_without_a_slot_waits_and_pays_the_load_when_it_gets_one() -> None:
    sim = engine(max_loras=1)
    first = new_seq(sim, prompt_text(10, "a"), 3, adapter="sql-v1")
    other = new_seq(sim, prompt_text(10, "b"), 3, adapter="sql-v2")
    base = new_seq(sim, prompt_text(10, "c"), 3)
    for seq in (first, other, base):
        sim.submit(seq, 0.0)
    sim.advance(0.0)
    # sql-v2 has no slot while sql-v1 runs: passed over, and the base-model request behind it runs.
    assert [s.state for s in (first, other, base)] == [
        SeqState.RUNNING,
        SeqState.WAITING,
        SeqState.RUNNING,
    ]
    run_engine(sim)
    assert other.admitted_at == first.finished_at
    assert (first.lora_loaded, other.lora_loaded, base.lora_loaded) == (True, True, False)
    # The first step: one load (7 ms) and two prefills (10 + 10 ms each).
    assert first.first_token_at == pytest.approx(0.007 + 2 * 0.020)
    assert other.first_token_at - other.admitted_at == pytest.approx(0.007 + 0.020)

    warm = new_seq(sim, prompt_text(10, "d"), 1, adapter="sql-v2")  # loaded already: no cost
    now = other.finished_at
    sim.submit(warm, now)
    run_engine(sim)
    assert not warm.lora_loaded and warm.first_token_at - now == pytest.approx(0.020)
    assert sim.loras.loads == 2


def test_a_stalled_sequence_keeps_its_slot_and_resumes_after_the_stall() -> None:
    sim = engine()
    seq = new_seq(sim, prompt_text(10, "s"), 4)
    seq.stall_after, seq.stall_s = 2, 0.100
    sim.submit(seq, 0.0)
    run_engine(sim, until=0.026)  # tokens at 0.020 and 0.025, then the stall
    assert len(sim.running) == 1 and sim.wake_at == pytest.approx(0.125)
    run_engine(sim)
    times = tokens_of(seq).times
    assert gaps(times) == pytest.approx([0.005, 0.100 + 0.005, 0.005])
    assert seq.stalled_s == pytest.approx(0.100) and sim.stats.stalls == 1


def test_an_aborted_sequence_frees_its_slot_and_blocks() -> None:
    sim = engine(max_num_seqs=1)
    leaving = new_seq(sim, prompt_text(30, "gone"), 50)
    next_up = new_seq(sim, prompt_text(30, "next"), 2)
    sim.submit(leaving, 0.0)
    sim.submit(next_up, 0.0)
    sim.advance(0.0)
    sim.abort(leaving, 0.001)
    run_engine(sim)
    assert leaving.state is SeqState.ABORTED and leaving.generated == 0
    assert next_up.state is SeqState.FINISHED
    assert sim.stats.finished["abort"] == 1 and sim.kv.used == 0


def test_jitter_is_deterministic_for_a_seed_and_bounded() -> None:
    def schedule(seed: int) -> list[float]:
        sim = Engine(dataclasses.replace(BASE, jitter=0.3), seed=seed)
        seqs = [new_seq(sim, prompt_text(20, f"j{i}"), 6) for i in range(3)]
        for seq in seqs:
            sim.submit(seq, 0.0)
        run_engine(sim)
        return [t for seq in seqs for t in tokens_of(seq).times]

    assert schedule(1) == schedule(1)
    assert schedule(1) != schedule(2)
    nominal = 0.005 * (1 + 2 / 3)  # decode steps of the batch of 3
    for gap in gaps(schedule(3)[:6])[1:]:
        assert 0.3 * nominal - 1e-12 <= gap <= 1.7 * nominal + 1e-12
