"""``ambient sim``: run vLLM-compatible model-server simulators until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from inference_ext.sim.config import SimConfig, SimConfigError

_DEFAULTS = SimConfig()


def _hostport(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (e.g. 127.0.0.2:8000)")
    return host, int(port)


def _range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition(":")
    if not sep or not low.isdigit() or not high.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not MIN:MAX (e.g. 16:256)")
    return int(low), int(high)


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _codes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(code) for code in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of status codes") from None


def _model_value(text: str) -> tuple[str, float]:
    """``MODEL=NUMBER``."""
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        return name, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not MODEL=NUMBER") from None


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the simulator's arguments."""
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    d = _DEFAULTS
    add = parser.add_argument
    add(
        "--listen",
        type=_hostport,
        default=f"{d.host}:{d.port}",
        metavar="HOST:PORT",
        help="address of the first replica (port 0: a free port)",
    )
    add(
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="replicas in this process, on consecutive addresses from HOST, same port",
    )
    add("--model", default=d.model, help="the base model's name")
    add(
        "--lora",
        type=_names,
        default=d.loras,
        metavar="A,B",
        help="LoRA adapters served on top of the model (each a model name)",
    )
    add("--max-num-seqs", type=int, default=d.max_num_seqs, help="sequences in a batch")
    add("--max-loras", type=int, default=d.max_loras, help="adapters a batch may hold")
    add("--lora-load-ms", type=float, default=d.lora_load_ms, help="cost of loading an adapter")
    add("--kv-blocks", type=int, default=d.kv_blocks, help="KV cache blocks")
    add("--block-size", type=int, default=d.block_size, help="tokens per KV block")
    add(
        "--prefill-overhead-ms",
        type=float,
        default=d.prefill_overhead_ms,
        help="fixed part of a prefill",
    )
    add(
        "--prefill-ms-per-token",
        type=float,
        default=d.prefill_ms_per_token,
        help="prefill cost per prompt token not in the KV cache",
    )
    add("--itl-ms", type=float, default=d.itl_ms, help="inter-token latency of a batch of one")
    add(
        "--itl-load-factor",
        type=float,
        default=d.itl_load_factor,
        help="ITL grows by this fraction from a batch of 1 to a full batch",
    )
    add(
        "--jitter",
        type=float,
        default=d.jitter,
        help="standard deviation of each step's duration, as a fraction of it",
    )
    add("--seed", type=int, default=d.seed, help="seed of answers, jitter and faults")
    add(
        "--time-scale",
        type=float,
        default=d.time_scale,
        help="multiplies every simulated duration (0.01 for fast tests)",
    )
    add(
        "--output-tokens",
        type=_range,
        default=d.output_tokens,
        metavar="MIN:MAX",
        help="answer length when a request sets no max_tokens",
    )
    add(
        "--error-rate",
        type=float,
        default=d.error_rate,
        help="fraction of generation requests answered with an error",
    )
    add(
        "--error-codes",
        type=_codes,
        default=d.error_codes,
        metavar="429,500",
        help="the statuses --error-rate answers (of 429, 500, 503)",
    )
    add(
        "--stall-rate",
        type=float,
        default=d.stall_rate,
        help="fraction of streams that stop sending for --stall-ms",
    )
    add("--stall-ms", type=float, default=d.stall_ms, help="how long a stalled stream pauses")
    add(
        "--model-delay-ms",
        type=_model_value,
        action="append",
        default=[],
        metavar="MODEL=MS",
        help="delay before MODEL's requests reach the engine (repeatable; e.g. a slow canary)",
    )
    add(
        "--model-error-rate",
        type=_model_value,
        action="append",
        default=[],
        metavar="MODEL=RATE",
        help="extra fraction of MODEL's requests answered with an error (repeatable)",
    )
    add(
        "--answers-of",
        default=d.answers_of,
        metavar="MODEL",
        help="answer as MODEL would be answered (a canary of the same weights under a new name)",
    )
    add(
        "--answer-variant",
        type=float,
        default=d.answer_variant,
        metavar="FRACTION",
        help="fraction of prompts answered with other words (which ones: fixed by --seed)",
    )
    add(
        "--duration",
        type=float,
        default=None,
        help="exit after this many seconds (default: serve until interrupted)",
    )


def config_from_args(args: argparse.Namespace) -> SimConfig:
    """The ``SimConfig`` the arguments describe (``SimConfigError`` names a bad one)."""
    host, port = args.listen
    return SimConfig(
        model=args.model,
        loras=args.lora,
        host=host,
        port=port,
        max_num_seqs=args.max_num_seqs,
        max_loras=args.max_loras,
        lora_load_ms=args.lora_load_ms,
        kv_blocks=args.kv_blocks,
        block_size=args.block_size,
        prefill_overhead_ms=args.prefill_overhead_ms,
        prefill_ms_per_token=args.prefill_ms_per_token,
        itl_ms=args.itl_ms,
        itl_load_factor=args.itl_load_factor,
        jitter=args.jitter,
        seed=args.seed,
        time_scale=args.time_scale,
        output_tokens=args.output_tokens,
        error_rate=args.error_rate,
        error_codes=args.error_codes,
        stall_rate=args.stall_rate,
        stall_ms=args.stall_ms,
        model_delay_ms=tuple(args.model_delay_ms),
        model_error_rate=tuple(args.model_error_rate),
        answers_of=args.answers_of,
        answer_variant=args.answer_variant,
    )


async def _serve(config: SimConfig, replicas: int, duration: float | None) -> None:
    from inference_ext.sim.server import start_sims

    servers = await start_sims(config, replicas)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await asyncio.wait_for(stop.wait(), duration)
    except TimeoutError:
        pass
    finally:
        for server in servers:
            await server.close()


def run(args: argparse.Namespace) -> int:
    """Run until interrupted (or ``--duration``); 2 for a bad setting, 1 if a port is taken."""
    import uvloop

    try:
        config = config_from_args(args)
        if args.replicas < 1:
            raise SimConfigError(f"replicas: must be at least 1, got {args.replicas}")
        config.replica_host(args.replicas - 1)
    except SimConfigError as exc:
        print(f"ambient sim: {exc}", file=sys.stderr)
        return 2
    try:
        uvloop.run(_serve(config, args.replicas, args.duration))
    except OSError as exc:
        print(f"ambient sim: {exc}", file=sys.stderr)
        return 1
    return 0
