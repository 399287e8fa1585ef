"""The scheduling benchmark's table, summary, diagnostics and plot."""

from __future__ import annotations

import argparse
import math
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.chat_load import percentile
from bench.chat_workload import WorkloadSpec
from bench.sim import table

if TYPE_CHECKING:
    from bench.scheduling import PolicyRun


@dataclass(frozen=True, slots=True)
class Row:
    """One policy at one rate step."""

    policy: str
    offered: float
    arrived: int
    achieved: float  # completions/s while the step was offered
    tokens: float  # content chunks/s while the step was offered
    ttft50: float  # ms
    ttft90: float
    itl90: float
    itl99: float
    hit: float  # %
    failures: int

    def cells(self) -> list[str]:
        return [
            self.policy,
            f"{self.offered:g}",
            f"{self.arrived}",
            f"{self.achieved:.1f}",
            f"{self.tokens:,.0f}",
            _ms(self.ttft50),
            _ms(self.ttft90),
            _ms(self.itl90),
            _ms(self.itl99),
            f"{self.hit:.1f}",
            f"{self.failures}",
        ]


HEADER = [
    "policy",
    "offered req/s",
    "requests",
    "achieved req/s",
    "output tok/s",
    "TTFT p50",
    "TTFT p90",
    "ITL p90",
    "ITL p99",
    "prefix hit %",
    "failures",
]


def _ms(seconds_ms: float) -> str:
    if math.isnan(seconds_ms):
        return "-"
    return f"{seconds_ms / 1000:.2f} s" if seconds_ms >= 1000 else f"{seconds_ms:.0f} ms"


def rows_of(run: PolicyRun, spec: WorkloadSpec) -> list[Row]:
    """One row per rate step."""
    rows = []
    for index, rate in enumerate(spec.rates):
        mine = [o for o in run.outcomes if o.arrival.step == index]
        good = [o for o in mine if not o.error]
        ttfts = [1000 * (o.first - o.sent) for o in good]
        gaps = [1000 * g for o in good for g in o.gaps]
        before, after = run.snapshots[index], run.snapshots[index + 1]
        pairs = list(zip(after, before, strict=True))
        queries = sum(a.prefix_queries - b.prefix_queries for a, b in pairs)
        hits = sum(a.prefix_hits - b.prefix_hits for a, b in pairs)
        window = run.windows[index]
        rows.append(
            Row(
                run.policy,
                rate,
                len(mine),
                window.completed / run.step,
                window.chunks / run.step,
                percentile(ttfts, 50),
                percentile(ttfts, 90),
                percentile(gaps, 90),
                percentile(gaps, 99),
                100 * hits / queries if queries else float("nan"),
                len(mine) - len(good),
            )
        )
    return rows


def _ratio_line(name: str, mine: Row, base: Row) -> str:
    tokens = mine.tokens / base.tokens if base.tokens else float("inf")
    ttft = 100 * (mine.ttft90 - base.ttft90) / base.ttft90 if base.ttft90 else float("nan")
    itl = 100 * (mine.itl90 - base.itl90) / base.itl90 if base.itl90 else float("nan")
    return (
        f"  picker vs {name}: {tokens:.2f}x output tok/s, TTFT p90 {ttft:+.0f}%, "
        f"ITL p90 {itl:+.0f}%, prefix hits {mine.hit:.0f}% vs {base.hit:.0f}%, "
        f"failures {mine.failures} vs {base.failures}"
    )


GAUGE_HEADER = [
    "policy",
    "offered req/s",
    "running",
    "max running",
    "waiting",
    "max waiting",
    "KV use",
    "picker queue",
    "replicas/group",
    "same replica as last turn",
]


def _gauges(run: PolicyRun, spec: WorkloadSpec) -> list[list[str]]:
    out = []
    for index, rate in enumerate(spec.rates):
        samples = run.samples[index] if index < len(run.samples) else []
        if not samples:
            continue
        n = len(samples)
        replicas = len(samples[0])
        running = [sum(s[r].running for s in samples) / n for r in range(replicas)]
        waiting = [sum(s[r].waiting for s in samples) / n for r in range(replicas)]
        kv = sum(c.kv for s in samples for c in s) / (n * replicas)
        queue = run.queued[index] if index < len(run.queued) else []
        out.append(
            [
                run.policy,
                f"{rate:g}",
                f"{sum(running) / replicas:.1f}",
                f"{max(running):.1f}",
                f"{sum(waiting) / replicas:.1f}",
                f"{max(waiting):.1f}",
                f"{100 * kv:.0f}%",
                f"{sum(queue) / len(queue):.1f}" if queue else "-",
                *_affinity(run, index),
            ]
        )
    return out


def _affinity(run: PolicyRun, step: int) -> list[str]:
    """How many replicas served each group in the step (mean), and the share of later turns
    that went to the replica of the conversation's previous turn."""
    groups: dict[int, set[int]] = {}
    last: dict[int, int] = {}  # user -> replica of their latest turn
    same = later = 0
    for o in run.outcomes:  # in arrival order
        a = o.arrival
        if o.replica < 0:
            continue
        if a.step == step:
            groups.setdefault(a.group, set()).add(o.replica)
            if a.turn > 0 and a.user in last:
                later += 1
                same += last[a.user] == o.replica
        last[a.user] = o.replica
    spread = sum(len(r) for r in groups.values()) / len(groups) if groups else float("nan")
    return [f"{spread:.1f}", f"{100 * same / later:.0f}%" if later else "-"]


def _skew(run: PolicyRun) -> str:
    first, last = run.snapshots[0], run.snapshots[-1]
    served = [int(a.requests - b.requests) for a, b in zip(last, first, strict=True)]
    total = sum(served) or 1
    mean = total / len(served)
    return (
        f"  {run.policy:<12} requests per replica {served} (max/mean {max(served) / mean:.2f}); "
        f"CPU s: sim {run.cpu['sim']:.1f}, gateway {run.cpu['gateway']:.1f}, client "
        f"{run.cpu['client']:.1f} over {run.cpu['seconds']:.0f} s; "
        f"client send delay p99 {1000 * percentile([o.lag for o in run.outcomes], 99):.1f} ms; "
        f"drain {run.drain:.1f} s"
    )


def _decisions(view: dict[str, Any]) -> list[str]:
    lines = []
    for pool in view.get("pools", ()):
        decisions = pool.get("decisions", [])
        chosen = Counter(d["chosen"] for d in decisions)
        fractions = [
            d["matchedBlocks"] / d["prefixBlocks"] for d in decisions if d.get("prefixBlocks")
        ]
        full = sum(1 for f in fractions if f >= 0.99)
        lines.append(
            f"  picker {pool['pool']}: scheduled {pool['scheduled']}, shed {pool['shed']}, "
            f"timed out {pool['timedOut']}, queued now {pool['queued']}, indexed blocks "
            f"{pool['prefixIndexBlocks']}"
        )
        if fractions:
            lines.append(
                f"  last {len(decisions)} decisions: prefix matched fully {full}, "
                f"mean match {100 * sum(fractions) / len(fractions):.0f}%, "
                f"waited > 0: {sum(1 for d in decisions if d['waited'] > 0)}; chosen "
                + ", ".join(f"{k} x{v}" for k, v in sorted(chosen.items()))
            )
    return lines


KEEPING_UP = 0.9  # achieved / offered at or above this: the policy is not saturated


def _compare(by_policy: dict[str, list[Row]], index: int) -> None:
    for policy, rows in by_policy.items():
        row = rows[index]
        state = "saturated" if row.achieved < KEEPING_UP * row.offered else "keeping up"
        print(f"  {policy:<12} achieved {row.achieved:.1f} req/s ({state})")
    picker = by_policy.get("picker")
    if picker is None:
        return
    for name in ("round-robin", "random"):
        if name in by_policy:
            print(_ratio_line(name, picker[index], by_policy[name][index]))
    rr = by_policy.get("round-robin")
    if rr is not None:
        mine, base = picker[index], rr[index]
        speedup = mine.tokens / base.tokens if base.tokens else float("inf")
        cut = 100 * (1 - mine.ttft90 / base.ttft90) if base.ttft90 else float("nan")
        failures = sum(r.failures for r in picker[: index + 1])
        print(
            f"  targets: >= 2x output tok/s: {speedup:.2f}x "
            f"({'met' if speedup >= 2 else 'missed'}); >= 90% lower TTFT p90: {cut:.0f}% "
            f"({'met' if cut >= 90 else 'missed'}); 0 failures (steps up to here): {failures} "
            f"({'met' if failures == 0 else 'missed'})"
        )


def print_report(spec: WorkloadSpec, runs: list[PolicyRun], args: argparse.Namespace) -> None:
    """The table (every policy x step), the comparison at saturation, and diagnostics."""
    by_policy = {run.policy: rows_of(run, spec) for run in runs}
    print()
    print(
        f"{len(spec.rates)} steps of {spec.step:g} s; {spec.groups} groups x {spec.users} users; "
        f"system prompts {spec.system_tokens[0]}-{spec.system_tokens[1]} tokens; "
        f"sims: 8 x max-num-seqs {args.max_num_seqs}, kv-blocks {args.kv_blocks}, "
        f"time-scale {args.time_scale:g}"
    )
    print(table(HEADER, [row.cells() for rows in by_policy.values() for row in rows]))
    print()
    top = len(spec.rates) - 1
    print(f"at saturation (offered {spec.rates[top]:g} req/s, the highest step):")
    _compare(by_policy, top)
    picker = by_policy.get("picker")
    if picker is not None:
        kept = [i for i, row in enumerate(picker) if row.achieved >= KEEPING_UP * row.offered]
        if kept and kept[-1] != top:
            index = kept[-1]
            print(
                f"\nat the highest step the picker keeps up with (offered "
                f"{spec.rates[index]:g} req/s):"
            )
            _compare(by_policy, index)
    for policy, rows in by_policy.items():
        best = max(rows, key=lambda r: r.tokens)
        print(
            f"  peak of {policy}: {best.tokens:,.0f} output tok/s, {best.achieved:.1f} req/s "
            f"(offered {best.offered:g})"
        )
    print(
        "\nreplicas while each step was offered (means over 0.5 s samples and replicas; "
        "max: the busiest replica's mean):"
    )
    print(table(GAUGE_HEADER, [cells for run in runs for cells in _gauges(run, spec)]))
    print("\nload per replica, CPU, client delay:")
    for run in runs:
        print(_skew(run))
    for run in runs:
        for line in _decisions(run.decisions):
            print(line)
    errors = Counter(o.error for run in runs for o in run.outcomes if o.error)
    if errors:
        print("\nfailures: " + "; ".join(f"{e} x{n}" for e, n in errors.most_common(5)))
    for run in runs:
        good = [o for o in run.outcomes if not o.error]
        mismatched = sum(1 for o in good if o.usage != o.chunks)
        if mismatched:
            print(f"  {run.policy}: {mismatched} answers whose usage differs from chunks received")


def save_plot(spec: WorkloadSpec, runs: list[PolicyRun], path: Path) -> None:
    """Output tokens/s and TTFT p90 against the offered rate, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for run in runs:
        rows = rows_of(run, spec)
        rates = [r.offered for r in rows]
        left.plot(rates, [r.tokens for r in rows], marker="o", label=run.policy)
        right.plot(rates, [r.ttft90 / 1000 for r in rows], marker="o", label=run.policy)
    left.set(xlabel="offered requests/s", ylabel="output tokens/s", title="Throughput")
    right.set(xlabel="offered requests/s", ylabel="TTFT p90 (s)", title="Time to first token")
    right.set_yscale("log")
    for axis in (left, right):
        axis.grid(True, alpha=0.3)
        axis.legend()
    fig.suptitle("8 simulated vLLM servers behind ambient gateway: shared-prefix chat")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
