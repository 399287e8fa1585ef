"""Model rollout: sticky versions vs per-request random draws, across a canary weight change.

Run ``python -m bench.rollout`` (about 2 minutes on a 2-core VM). In one run, for each mode in
turn (``sticky``: the InferenceModelRewrite has ``inference.ambient.dev/session-key:
header:x-session-id``; ``random``: it has not, each request draws its version by weight):

* **the fleet**: ``ambient sim --replicas 8`` (one fresh process, 127.0.0.2 ... 127.0.0.9), each
  replica serving both versions as LoRA adapters, ``llama-v1`` and ``llama-v2`` — as a rewrite
  assumes, every pod serves every target; the simulator keys its prefix cache by adapter, as
  vLLM does, so a turn sent to the other version finds none of its conversation cached;
* **the gateway**: ``ambient gateway -f``, an HTTPRoute to an InferencePool of the 8 (the
  in-process picker) and an InferenceModelRewrite of ``llama``: ``llama-v1`` 90, ``llama-v2`` 10;
  mid-run the file is rewritten to 50 / 50 and the gateway reloads it (SIGHUP; the change counts
  from the moment ``/config_dump`` shows the new weights; requests sent in between are left out);
* **the load** (:mod:`bench.chat_workload`, :mod:`bench.chat_load`): groups of users sharing
  long system prompts, multi-turn streaming conversations asking for ``llama``, Poisson arrivals
  at a steady rate, the same seeded requests in both modes; each user is a session
  (``x-session-id: user-<n>``, sent in both modes).

Reported per mode: the share of sessions that kept one version within each weight phase (of those
with at least two answered requests in the phase), how the sessions seen in both phases moved at
the change (v1 -> v2 is the canary growing; v2 -> v1 must not happen when sticky), the canary's
share of requests per phase, the simulators' prefix-cache hit rate (``vllm:prefix_cache_hits`` /
``queries``, in tokens, summed), time to first token p50/p90 as the client measures it, and
failures; then sticky / random ratios. Latencies are after ``--time-scale`` (0.5: a GPU twice as
fast as the simulator's H100 profile).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import time
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import uvloop

from bench.chat_load import LoadRun, Outcome, percentile
from bench.chat_workload import Arrival, WorkloadSpec, build
from bench.fleet import CONFIG_FILE, Counters, read_counters, start_gateway, start_sims
from bench.processes import Service, free_port
from inference_ext.sim.config import SimConfig

REPLICAS = 8
HEADER = b"x-session-id"
VERSIONS = ("llama-v1", "llama-v2")
MODES = ("sticky", "random")

_REWRITE = """\
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata:
  name: llama
  namespace: default
  annotations: {{{annotations}}}
spec:
  poolRef: {{name: vllm}}
  rules:
    - matches: [{{model: {{type: Exact, value: llama}}}}]
      targets: [{{modelRewrite: llama-v1, weight: {v1}}}, {{modelRewrite: llama-v2, weight: {v2}}}]
"""


def rewrite_yaml(mode: str, canary: int) -> str:
    """The rewrite of ``llama``: ``canary`` % to v2, sticky per session or not."""
    key = f"inference.ambient.dev/session-key: header:{HEADER.decode()}"
    return _REWRITE.format(annotations=key if mode == "sticky" else "", v1=100 - canary, v2=canary)


def with_session(arrival: Arrival) -> Arrival:
    """The request with its user's session header."""
    head, sep, body = arrival.request.partition(b"\r\n\r\n")
    field = b"\r\n%b: user-%d" % (HEADER, arrival.user)
    return replace(arrival, request=head + field + sep + body)


@dataclass
class ModeRun:
    """One mode's outcomes and counters."""

    mode: str
    outcomes: list[Outcome]
    change: tuple[float, float]  # loop times: reload asked, new weights confirmed
    counters: Counters


def _dumped_weights(admin: int) -> list[dict[str, int]]:
    """Every rewrite rule's weights in ``/config_dump``."""
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/config_dump", timeout=10) as r:
        dump = json.loads(r.read())
    found: list[dict[str, int]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for rule in node.get("rewrites") or ():
                if isinstance(rule, dict) and "targets" in rule:
                    found.append(rule["targets"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dump)
    return found


async def _change_weights(gateway: Service, admin: int, mode: str, canary: int) -> float:
    """Rewrite the config file, ask for a reload; the loop time the new weights show."""
    assert gateway.workdir is not None
    path = Path(gateway.workdir.name, CONFIG_FILE)
    text = path.read_text()
    head = text[: text.index("---\napiVersion: inference.networking.x-k8s.io/v1alpha2")]
    staged = path.with_suffix(".new")
    staged.write_text(head + rewrite_yaml(mode, canary))
    os.replace(staged, path)
    gateway.proc.send_signal(signal.SIGHUP)
    wanted = {VERSIONS[0]: 100 - canary, VERSIONS[1]: canary}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while wanted not in await asyncio.to_thread(_dumped_weights, admin):
        if loop.time() > deadline:
            raise RuntimeError("the gateway did not load the new weights within 10 s")
        await asyncio.sleep(0.02)
    return loop.time()


async def run_mode(
    mode: str, config: SimConfig, arrivals: list[Arrival], spec: WorkloadSpec, args: Any
) -> ModeRun:
    """Fresh simulators and gateway, the whole load with one weight change; then both stopped."""
    hosts = [config.replica_host(i) for i in range(REPLICAS)]
    sims = start_sims(config, REPLICAS)
    gateway = None
    try:
        gateway, admin = start_gateway(
            "picker", hosts, config.port, rewrite_yaml(mode, args.canary_from)
        )
        await asyncio.sleep(0.5)  # the picker's first scrapes
        loop = asyncio.get_running_loop()
        change: list[float] = []
        tasks: list[asyncio.Task[float]] = []
        change_at = len(spec.rates) // 2

        def on_window(index: int) -> None:
            if index == change_at:
                change.append(loop.time())
                tasks.append(
                    loop.create_task(_change_weights(gateway, admin, mode, args.canary_to))
                )

        before = await read_counters(hosts, config.port)
        load = LoadRun(
            "127.0.0.1", gateway.port, arrivals, spec.step, len(spec.rates), 30.0, on_window
        )
        await load.warm(16)
        outcomes = await load.run()
        confirmed = await tasks[0]
        after = await read_counters(hosts, config.port)
        total = Counters()
        for now, then in zip(after, before, strict=True):
            grown = now.minus(then)
            total.prefix_hits += grown.prefix_hits
            total.prefix_queries += grown.prefix_queries
        return ModeRun(mode, outcomes, (change[0], confirmed), total)
    finally:
        if gateway is not None:
            gateway.stop()
        sims.stop()


def summarize(run: ModeRun) -> dict[str, float]:
    """The report's figures for one mode."""
    asked, confirmed = run.change
    phases: dict[tuple[int, int], list[str]] = defaultdict(list)  # (user, phase) -> versions
    canary = [[0, 0], [0, 0]]  # per phase: v2 answers, answers
    ok = [o for o in run.outcomes if not o.error]
    left_out = 0
    for o in ok:
        if o.sent < asked:
            phase = 0
        elif o.sent > confirmed:
            phase = 1
        else:
            left_out += 1
            continue
        phases[(o.arrival.user, phase)].append(o.model)
        canary[phase][0] += o.model == VERSIONS[1]
        canary[phase][1] += 1
    multi = [set(models) for models in phases.values() if len(models) >= 2]
    kept = sum(len(models) == 1 for models in multi)
    moves = {"v1->v2": 0, "v2->v1": 0, "kept": 0}
    users = {user for user, _ in phases}
    both = 0
    for user in users:
        first, second = set(phases.get((user, 0), ())), set(phases.get((user, 1), ()))
        if len(first) == 1 and len(second) == 1:
            both += 1
            pair = (first.pop(), second.pop())
            if pair[0] == pair[1]:
                moves["kept"] += 1
            elif pair == VERSIONS:
                moves["v1->v2"] += 1
            else:
                moves["v2->v1"] += 1
    ttft = [o.first - o.sent for o in ok if o.chunks]
    queries = run.counters.prefix_queries
    return {
        "one_version": kept / len(multi) if multi else float("nan"),
        "session_phases": len(multi),
        "both": both,
        "v1->v2": moves["v1->v2"] / both if both else float("nan"),
        "v2->v1": moves["v2->v1"] / both if both else float("nan"),
        "canary0": canary[0][0] / canary[0][1] if canary[0][1] else float("nan"),
        "canary1": canary[1][0] / canary[1][1] if canary[1][1] else float("nan"),
        "prefix": run.counters.prefix_hits / queries if queries else float("nan"),
        "ttft50": percentile(ttft, 50) * 1000,
        "ttft90": percentile(ttft, 90) * 1000,
        "failures": len(run.outcomes) - len(ok),
        "left_out": left_out,
        "requests": len(run.outcomes),
        "reload_ms": (confirmed - asked) * 1000,
    }


def print_report(spec: WorkloadSpec, args: Any, figures: dict[str, dict[str, float]]) -> None:
    """The table, sticky vs random."""
    sticky, rand = figures["sticky"], figures["random"]
    print()
    print(
        f"{len(spec.rates)} steps of {spec.step:g} s at {spec.rates[0]:g} requests/s; "
        f"{spec.groups} groups x {spec.users} users (each a session); {REPLICAS} replicas "
        f"serving {VERSIONS[0]} and {VERSIONS[1]}; canary {args.canary_from}% -> "
        f"{args.canary_to}% after step {len(spec.rates) // 2}"
    )
    rows = [
        ("sessions on one version per phase", "one_version", "{:.1%}", True),
        ("  session-phases (>= 2 answers)", "session_phases", "{:.0f}", False),
        ("sessions v1 -> v2 at the change", "v1->v2", "{:.1%}", False),
        ("sessions v2 -> v1 at the change", "v2->v1", "{:.1%}", False),
        ("  sessions seen in both phases", "both", "{:.0f}", False),
        (f"canary share, {args.canary_from}% phase", "canary0", "{:.1%}", False),
        (f"canary share, {args.canary_to}% phase", "canary1", "{:.1%}", False),
        ("prefix-cache hit rate (tokens)", "prefix", "{:.1%}", True),
        ("TTFT p50 (ms)", "ttft50", "{:.0f}", True),
        ("TTFT p90 (ms)", "ttft90", "{:.0f}", True),
        ("failures", "failures", "{:.0f}", False),
        ("requests (left out: sent mid-reload)", "requests", "{:.0f}", False),
    ]
    print(f"{'':40} {'sticky':>9} {'random':>9} {'sticky/random':>14}")
    for label, key, fmt, ratio in rows:
        left, right = fmt.format(sticky[key]), fmt.format(rand[key])
        if key == "requests":
            left += f" ({sticky['left_out']:.0f})"
            right += f" ({rand['left_out']:.0f})"
        share = f"{sticky[key] / rand[key]:.2f}x" if ratio and rand[key] else ""
        print(f"{label:40} {left:>9} {right:>9} {share:>14}")
    print(
        f"reload to new weights: {sticky['reload_ms']:.0f} ms (sticky run), "
        f"{rand['reload_ms']:.0f} ms (random run)"
    )


async def measure(args: argparse.Namespace) -> tuple[WorkloadSpec, dict[str, dict[str, float]]]:
    """Both modes, one after the other, on the same requests."""
    config = SimConfig(
        host="127.0.0.2",
        port=free_port("127.0.0.2"),
        model="llama-base",
        loras=VERSIONS,
        max_loras=2,
        kv_blocks=args.kv_blocks,
        time_scale=args.time_scale,
        seed=args.seed,
    )
    spec = WorkloadSpec(
        groups=args.groups,
        users=args.users,
        rates=(args.rate,) * args.steps,
        step=args.step,
        seed=args.seed,
    )
    # The requests name `llama` (the rewrite's incoming model): built as the client sends them.
    arrivals = [with_session(a) for a in build(spec, replace(config, model="llama"), "bench")]
    figures = {}
    for mode in MODES:
        print(f"running {mode} ({len(arrivals)} requests) ...", flush=True)
        figures[mode] = summarize(await run_mode(mode, config, arrivals, spec, args))
    return spec, figures


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.rollout``."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--rate", type=float, default=8.0, help="requests per second")
    add("--steps", type=int, default=4, help="steps (the weights change after half of them)")
    add("--step", type=float, default=10.0, help="seconds per step")
    add("--groups", type=int, default=12, help="groups sharing a system prompt")
    add("--users", type=int, default=4, help="users (sessions) per group")
    add("--canary-from", type=int, default=10, help="the canary's weight before the change")
    add("--canary-to", type=int, default=50, help="the canary's weight after the change")
    add("--kv-blocks", type=int, default=2048, help="each replica's KV cache blocks")
    add("--time-scale", type=float, default=0.5, help="the simulators' time scale")
    add("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    started = time.monotonic()
    spec, figures = uvloop.run(measure(args))
    print_report(spec, args, figures)
    print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
