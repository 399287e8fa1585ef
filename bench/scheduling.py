"""Inference scheduling: round-robin, random and the endpoint picker on one simulated fleet.

Run ``python -m bench.scheduling`` (about 4.5 minutes on a 2-core VM; ``--quick``, about 1.5, is
a smoke run: 3 steps of 6 s are too short for the fleet to settle at the highest rate). The plot
needs matplotlib (``pip install -e '.[bench]'``). In one run, for each policy in turn:

* **the fleet**: ``ambient sim --replicas 8`` as one fresh process on 127.0.0.2 ... 127.0.0.9
  (empty KV caches: no policy inherits another's warm cache);
* **the gateway**: ``ambient gateway -f`` (one process), an HTTPRoute for ``/v1/`` to either a
  Service over the 8 simulators (an EndpointSlice) annotated
  ``gateway.ambient.dev/load-balancer: round-robin`` or ``random``, or an InferencePool of the 8
  as Pods with the in-process picker at its defaults: the same data path for all three;
* **the load** (:mod:`bench.chat_workload`, :mod:`bench.chat_load`): groups of users sharing
  long system prompts, multi-turn conversations, streaming chat completions with usage, Poisson
  arrivals at rising rates (8 to 48 requests/s, 10 s each), the same seeded requests for every
  policy, each request given 30 s (10 s with ``--quick``) before it counts as a failure.

Reported per policy and rate step: the offered and achieved rate, output tokens/s, time to first
token p50/p90, inter-token latency p90 and p99 (all as the client measures them, over the
requests that arrived in the step; the rates over what was received while the step was offered),
the simulators' prefix-cache hit rate over the step (``vllm:prefix_cache_hits_total`` /
``vllm:prefix_cache_queries_total``, in tokens, summed over replicas) and failures.

*Saturation* is the highest step, 48 requests/s: above what round-robin and random serve (about
20/s: the table shows their achieved rate falling short from 24/s on) and at the edge of what the
picker serves. The summary compares the policies there, then again at the highest step the picker
keeps up with (achieved >= 90% of offered), where only the baselines are saturated. Beside the
table: each policy's replicas over each step (batch, queue, KV use, the picker's own queue, how
many replicas served each group and how often a turn went to the replica of the conversation's
previous turn), requests per replica, CPU of the simulators, the gateway and this client, the
client's own send delay, and the picker's recent decisions from ``GET /plugins/inference`` (saved
whole beside the plot).

**The simulated servers** keep the simulator's cost model (an 8B model on one H100, as
llm-d-inference-sim profiles it): a prefill step costs 30 ms + 0.2 ms per prompt token not in
the KV cache, so a 4,000-token system prompt costs ~830 ms to prefill and ~30 ms once cached,
while a decode step is 12 ms for one sequence and 24 ms for a full batch of 16 (``max_num_seqs``,
the simulator's default): a miss on a long prompt costs every sequence in the batch 35-70 decode
steps, as a prefill does on a GPU without chunked prefill. ``--kv-blocks 2048`` (32,768 tokens)
holds about 8 of the 24 system prompts (2-6k tokens, ~4k mean: ~250 blocks each) when nothing
runs, fewer beside the running sequences: several groups per server, never all of them, which
is what makes prefix affinity matter (an H100 holds ~400k tokens of an 8B model's KV, under half
the prefixes of 150 groups of 6k-token prompts: a like proportion). ``--time-scale 0.5`` runs
that GPU twice as fast, so 6 steps of 10 s and the drain fit in about 90 s per policy while the
simulators, the gateway and the client each use under 15% of a core; every latency is as
measured, i.e. after the time scale (double it for the profile's milliseconds; ratios are
unchanged). Answers are 32-160 tokens, questions 40-200, 2-6 turns per conversation, 4 users per
group.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvloop

from bench.chat_load import LoadRun, Outcome, Window
from bench.chat_workload import Arrival, WorkloadSpec, build
from bench.fleet import (
    POLICIES,
    Counters,
    admin_json,
    read_counters,
    start_gateway,
    start_sims,
)
from bench.processes import cpu_seconds, free_port
from bench.scheduling_report import print_report, save_plot
from inference_ext.sim.config import SimConfig

REPLICAS = 8
SAMPLE_EVERY = 0.5  # seconds between reads of the replicas' gauges (batch, queue, KV use)
RESULTS = Path(__file__).parent / "results"


@dataclass
class PolicyRun:
    """Everything measured for one policy."""

    policy: str
    outcomes: list[Outcome]
    windows: list[Window]
    snapshots: list[list[Counters]]  # per step boundary (0: before the first step), then final
    step: float
    cpu: dict[str, float]
    drain: float  # seconds from the last step's end to the last answer
    decisions: dict[str, Any] = field(default_factory=dict)
    # Per step: the replicas' gauges every SAMPLE_EVERY seconds while it was offered.
    samples: list[list[list[Counters]]] = field(default_factory=list)
    queued: list[list[float]] = field(default_factory=list)  # the picker's queue, same times


def sim_config(args: argparse.Namespace, port: int) -> SimConfig:
    """The simulators' settings from the arguments."""
    return SimConfig(
        host="127.0.0.2",
        port=port,
        max_num_seqs=args.max_num_seqs,
        kv_blocks=args.kv_blocks,
        prefill_overhead_ms=args.prefill_overhead_ms,
        prefill_ms_per_token=args.prefill_ms_per_token,
        itl_ms=args.itl_ms,
        time_scale=args.time_scale,
        seed=args.seed,
    )


def _get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=10) as response:
        response.read()
        return int(response.status)


async def run_policy(
    policy: str, config: SimConfig, arrivals: list[Arrival], spec: WorkloadSpec, timeout: float
) -> PolicyRun:
    """Fresh simulators, a gateway for ``policy``, the whole load; then both stopped."""
    hosts = [config.replica_host(i) for i in range(REPLICAS)]
    sims = start_sims(config, REPLICAS)
    gateway = None
    try:
        gateway, admin = start_gateway(policy, hosts, config.port)
        url = f"http://127.0.0.1:{gateway.port}/v1/models"
        status = await asyncio.to_thread(_get, url)  # the route works; the picker starts scraping
        if status != 200:
            raise RuntimeError(f"GET /v1/models through the gateway answered {status}")
        await asyncio.sleep(0.5)
        loop = asyncio.get_running_loop()
        steps = len(spec.rates)
        snapshots: list[list[Counters]] = [await read_counters(hosts, config.port)]
        pending: dict[int, asyncio.Task[list[Counters]]] = {}

        def on_window(index: int) -> None:
            pending[index] = loop.create_task(read_counters(hosts, config.port))

        load = LoadRun("127.0.0.1", gateway.port, arrivals, spec.step, steps, timeout, on_window)
        await load.warm(32)
        samples: list[list[list[Counters]]] = [[] for _ in range(steps)]
        queued: list[list[float]] = [[] for _ in range(steps)]
        picker_admin = admin if policy == "picker" else None
        sampler = loop.create_task(_sample(load, hosts, config.port, samples, queued, picker_admin))
        sims.refresh_pids()
        gateway.refresh_pids()
        cpu_before = (cpu_seconds(sims.pids), cpu_seconds(gateway.pids), time.process_time())
        outcomes = await load.run()
        sampler.cancel()
        drain = max(0.0, load.elapsed - steps * spec.step)
        cpu = {
            "sim": cpu_seconds(sims.pids) - cpu_before[0],
            "gateway": cpu_seconds(gateway.pids) - cpu_before[1],
            "client": time.process_time() - cpu_before[2],
            "seconds": load.elapsed,
        }
        for index in range(1, steps + 1):
            snapshots.append(await pending[index])
        snapshots.append(await read_counters(hosts, config.port))
        decisions: dict[str, Any] = {}
        if policy == "picker":
            decisions = await asyncio.to_thread(admin_json, admin, "/plugins/inference")
        return PolicyRun(
            policy,
            outcomes,
            load.windows,
            snapshots,
            spec.step,
            cpu,
            drain,
            decisions,
            samples,
            queued,
        )
    finally:
        if gateway is not None:
            gateway.stop()
        sims.stop()


async def _sample(
    load: LoadRun,
    hosts: list[str],
    port: int,
    into: list[list[list[Counters]]],
    queued: list[list[float]],
    admin: int | None,
) -> None:
    """The replicas' gauges (and the picker's queue) every SAMPLE_EVERY seconds, filed by the
    step being offered."""
    while True:
        await asyncio.sleep(SAMPLE_EVERY)
        step = int(load.elapsed // load.step) if load.started else -1
        if 0 <= step < len(into):
            into[step].append(await read_counters(hosts, port))
            if admin is not None:
                view = await asyncio.to_thread(admin_json, admin, "/plugins/inference")
                queued[step].append(sum(pool["queued"] for pool in view["pools"]))


def workload_spec(args: argparse.Namespace) -> WorkloadSpec:
    """The workload from the arguments (``--quick``: fewer, shorter steps)."""
    rates = tuple(float(r) for r in args.rates.split(","))
    step = args.step
    if args.quick:
        rates = tuple(sorted({rates[0], rates[len(rates) // 2], rates[-1]}))
        step = min(step, 6.0)
    return WorkloadSpec(
        groups=args.groups,
        users=args.users,
        rates=rates,
        step=step,
        seed=args.seed,
    )


async def measure(args: argparse.Namespace) -> tuple[WorkloadSpec, list[PolicyRun]]:
    """Every policy asked for, one after the other, on the same requests."""
    config = sim_config(args, free_port("127.0.0.2"))
    spec = workload_spec(args)
    arrivals = build(spec, config, "bench")
    runs = []
    for policy in args.policies.split(","):
        if policy not in POLICIES:
            raise SystemExit(f"--policies: {policy!r} is not one of {', '.join(POLICIES)}")
        print(f"running {policy} ({len(arrivals)} requests) ...", flush=True)
        timeout = args.timeout if args.timeout is not None else (10.0 if args.quick else 30.0)
        runs.append(await run_policy(policy, config, arrivals, spec, timeout))
    return spec, runs


def main(argv: list[str] | None = None) -> None:
    """``python -m bench.scheduling``."""
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="first, middle, last rate; 6 s steps; 10 s timeout")
    add("--rates", default="8,16,24,32,40,48", help="offered requests/s, one step each")
    add("--step", type=float, default=10.0, help="seconds per rate step")
    add("--groups", type=int, default=24, help="system prompts (user groups)")
    add("--users", type=int, default=4, help="users per group")
    add("--policies", default=",".join(POLICIES), help="of round-robin, random, picker")
    add("--timeout", type=float, default=None, help="seconds a request may take (30; quick: 10)")
    add("--time-scale", type=float, default=0.5, help="the simulators' --time-scale")
    add("--max-num-seqs", type=int, default=16)
    add("--kv-blocks", type=int, default=2048, help="KV blocks of 16 tokens per replica")
    add("--prefill-overhead-ms", type=float, default=30.0)
    add("--prefill-ms-per-token", type=float, default=0.2)
    add("--itl-ms", type=float, default=12.0)
    add("--seed", type=int, default=1)
    add("--plot", type=Path, default=RESULTS / "scheduling.png", help="the PNG to write")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:  # an overloaded policy holds a connection per queued request
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    spec, runs = uvloop.run(measure(args))
    print_report(spec, runs, args)
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    for run in runs:
        if run.decisions:
            path = args.plot.with_name(args.plot.stem + "-picker.json")
            path.write_text(json.dumps(run.decisions, indent=1))
            print(f"the picker's admin view: {path}")
    save_plot(spec, runs, args.plot)
    print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
