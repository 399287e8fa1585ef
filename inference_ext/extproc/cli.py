"""``ambient epp``: serve one InferencePool's endpoint picker to Envoy over ext_proc."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.backends.base import ResolveContext
from inference_ext.extproc.server import start_server
from inference_ext.extproc.stream import DEFAULT_MAX_BODY
from inference_ext.scheduling import Scheduler

OBJECTIVE_GROUP = "inference.networking.x-k8s.io"


def configure(parser: argparse.ArgumentParser) -> None:
    """Add ``ambient epp``'s arguments."""
    parser.add_argument(
        "-f",
        "--file",
        dest="files",
        action="append",
        required=True,
        metavar="FILE",
        help="Kubernetes YAML: the InferencePool, its Pods, InferenceObjectives (repeatable)",
    )
    parser.add_argument("--pool", required=True, help="the InferencePool's name")
    parser.add_argument("--namespace", default="default", help="the pool's namespace")
    parser.add_argument(
        "--listen", default="127.0.0.1:9002", help="HOST:PORT of the ext_proc server"
    )
    parser.add_argument(
        "--max-body",
        type=int,
        default=DEFAULT_MAX_BODY,
        metavar="BYTES",
        help="the largest request body read to pick an endpoint; beyond it 413",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM or SIGINT."""
    from gateway.config import ConfigError, load_files

    try:
        from inference_ext.pool import build_scheduler
    except ImportError:
        print(
            "ambient epp: the pool scheduler (inference_ext.pool) is not built yet", file=sys.stderr
        )
        return 1
    try:
        resources = load_files(args.files)
    except ConfigError as exc:
        print(f"ambient epp: invalid config: {exc}", file=sys.stderr)
        return 1
    pool = PoolArgs(args.namespace, args.pool, args.listen, args.max_body)
    try:
        asyncio.run(serve(resources, pool, build_scheduler))
    except (LookupError, ValueError, OSError) as exc:
        print(f"ambient epp: {exc}", file=sys.stderr)
        return 1
    return 0


@dataclass(frozen=True, slots=True)
class PoolArgs:
    """Which pool to serve, and where."""

    namespace: str
    pool: str
    listen: str
    max_body: int = DEFAULT_MAX_BODY


async def serve(
    resources: ResolveContext,
    args: PoolArgs,
    build_scheduler: Callable[[Any, str, str], Scheduler],
    stop: asyncio.Event | None = None,
) -> None:
    """Build the pool's scheduler and serve it until ``stop`` is set (None: until SIGTERM or
    SIGINT). The scheduler is built in the loop: it may start tasks (metrics scrapers)."""
    scheduler = build_scheduler(resources, args.namespace, args.pool)
    objectives = resources.list(OBJECTIVE_GROUP, "InferenceObjective", args.namespace)
    running = await start_server(
        scheduler,
        args.listen,
        priority_of=objective_priorities(objectives, args.pool),
        max_body=args.max_body,
    )
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await running.stop()


def objective_priorities(objectives: list[Mapping[str, Any]], pool: str) -> Callable[[str], int]:
    """``priority_of(objective name)`` from the pool's InferenceObjectives (raw objects):
    ``spec.priority`` (unset: 0) of the objective whose ``spec.poolRef.name`` is the pool; an
    unknown name or no header is priority 0, as GIE's EPP does."""
    priorities: dict[str, int] = {}
    for obj in objectives:
        spec = obj.get("spec") or {}
        if (spec.get("poolRef") or {}).get("name") != pool:
            continue
        priority = spec.get("priority", 0)
        name = (obj.get("metadata") or {}).get("name")
        if isinstance(name, str) and isinstance(priority, int):
            priorities[name] = priority
    return lambda objective: priorities.get(objective, 0)
