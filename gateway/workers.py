"""``--workers N``: N serving processes sharing the listening sockets, one supervisor.

The supervisor validates the config, binds the listener ports (``gateway.shared_sockets``: no
SO_REUSEPORT, so no other process can share them), starts the workers, restarts any that die,
forwards SIGHUP (reload) and SIGTERM (drain) to them, and serves the admin API. Each worker
loads the supervisor's plugins again (the spawn context inherits no registrations), compiles the
same files itself and keeps its own metrics; a scrape asks every worker for its metric state over
a pipe and renders the sum, so the totals are the gateway's, not one worker's. A worker whose
plugins fail to load or start, or whose port is taken, stops the gateway instead of being
restarted forever.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import multiprocessing
import os
import signal
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from gateway.lifeline import die_with_parent
from gateway.log_format import configure_logging
from gateway.observability.metrics import render_states
from gateway.plugins import (
    AdminContext,
    PluginError,
    PluginSpec,
    is_sticky,
    load_plugins,
    loaded_plugins,
    local_call,
    local_views,
    run_admin_start_hooks,
    run_admin_stop_hooks,
)
from gateway.reload import ConfigReloader, build_snapshot
from gateway.server import GatewayOptions, GatewayProcess
from gateway.shared_sockets import SocketBroker, socket_client
from gateway.snapshot import Snapshot, SnapshotHolder
from ports import PortInUse

log = logging.getLogger("gateway.workers")

_ASK_METRICS = "metrics"
_ASK_VIEW = "view"  # ("view", path): the worker answers local_views(path)
_CALL = "call"  # ("call", name, arg): the worker answers (_CALL, local_call(name, arg))
_CALL_FAILED = "call failed"  # (_CALL_FAILED, message): the worker call raised
_FATAL = "fatal"  # a worker that cannot start for a reason a restart will not cure


def _worker_main(
    options: GatewayOptions,
    index: int,
    conn: Connection,
    plugins: tuple[PluginSpec, ...],
    ports: Connection,
    sticky: tuple[tuple[str, Any], ...] = (),
) -> None:
    configure_logging(options.log_format)
    parent = multiprocessing.parent_process()
    if parent is not None and parent.pid is not None:
        die_with_parent(parent.pid)  # a SIGKILLed supervisor takes its workers along
    import uvloop

    try:
        # A spawned child starts from a fresh interpreter: nothing the supervisor registered is
        # here, so the same plugins are loaded again, in the same order.
        load_plugins(plugins)
        # State the admin process pushed before this worker started, applied before it binds.
        for name, arg in sticky:
            local_call(name, arg)
        uvloop.run(_worker(options, index, conn, ports))
    except (PluginError, PortInUse) as exc:
        log.error("worker %d: %s", index, exc)
        conn.send((_FATAL, str(exc)))
        raise SystemExit(1) from exc


async def _worker(options: GatewayOptions, index: int, conn: Connection, ports: Connection) -> None:
    worker_options = dataclasses.replace(options, admin=None, report_config=index == 0)
    process = GatewayProcess(worker_options, sockets=socket_client(ports), admin_process=False)
    process.install_signals()
    loop = asyncio.get_running_loop()

    def answer() -> None:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            process.stop()  # the supervisor is gone
            return
        if message == _ASK_METRICS:
            conn.send(process.telemetry.metrics.export_state())
        elif isinstance(message, tuple) and message[0] == _ASK_VIEW:
            try:
                conn.send(local_views(message[1]))
            except Exception as exc:  # a plugin's view failed: the admin API says so
                log.exception("worker %d: admin view %s failed", index, message[1])
                conn.send([{"error": f"{type(exc).__name__}: {exc}"}])
        elif isinstance(message, tuple) and message[0] == _CALL:
            try:
                conn.send((_CALL, local_call(message[1], message[2])))
            except Exception as exc:
                log.exception("worker %d: worker call %s failed", index, message[1])
                conn.send((_CALL_FAILED, f"{type(exc).__name__}: {exc}"))

    loop.add_reader(conn.fileno(), answer)
    await process.start()
    conn.send(("ready", os.getpid()))
    log.info("worker %d ready (pid %d)", index, os.getpid())
    await process.run_until_stopped()


class _Worker:
    """The supervisor's handle on one worker process."""

    def __init__(
        self,
        ctx: Any,
        options: GatewayOptions,
        index: int,
        sticky: tuple[tuple[str, Any], ...] = (),
    ) -> None:
        self.index = index
        self.conn, child = ctx.Pipe()
        self.ports, child_ports = ctx.Pipe()  # listening sockets, asked for by the worker
        plugins = tuple(loaded_plugins())
        self.process: BaseProcess = ctx.Process(
            target=_worker_main,
            args=(options, index, child, plugins, child_ports, sticky),
            name=f"ambient-worker-{index}",
        )
        self.process.start()
        child.close()
        child_ports.close()
        self.ready = False
        self.fatal: str | None = None
        self.lock = threading.Lock()

    def poll_ready(self) -> None:
        with self.lock:
            try:
                while not self.ready and self.conn.poll():
                    message = self.conn.recv()
                    if isinstance(message, tuple) and message[0] == _FATAL:
                        self.fatal = str(message[1])
                    self.ready = isinstance(message, tuple) and message[0] == "ready"
            except (EOFError, OSError):
                return

    def metrics_state(self, timeout: float = 2.0) -> Any | None:
        return self.ask(_ASK_METRICS, timeout)

    def views(self, path: str, timeout: float = 2.0) -> list[Any]:
        """The worker's admin views at ``path`` ([] when it does not answer)."""
        answer = self.ask((_ASK_VIEW, path), timeout)
        return answer if isinstance(answer, list) else []

    def call(self, name: str, arg: Any, timeout: float = 2.0) -> tuple[bool, Any]:
        """Run the worker call ``name``: (True, its answer), or (False, why it has none)."""
        answer = self.ask((_CALL, name, arg), timeout)
        if isinstance(answer, tuple) and len(answer) == 2 and answer[0] == _CALL:
            return True, answer[1]
        if isinstance(answer, tuple) and len(answer) == 2 and answer[0] == _CALL_FAILED:
            return False, answer[1]
        return False, "no answer"

    def ask(self, message: Any, timeout: float) -> Any | None:
        """Send ``message``; the worker's answer, or None when it gives none in time.

        A "ready" (or fatal) notice that arrives meanwhile is noted, not taken for the answer: a
        worker that is still starting reads the question only once it is ready.
        """
        with self.lock:
            try:
                while self.conn.poll():  # a late "ready", or the answer to a question timed out
                    self._note(self.conn.recv())
                self.conn.send(message)
                deadline = time.monotonic() + timeout
                while self.conn.poll(max(0.0, deadline - time.monotonic())):
                    answer = self.conn.recv()
                    if not self._note(answer):
                        return answer
            except (EOFError, OSError):
                return None
        return None

    def _note(self, message: Any) -> bool:
        """Record a "ready" or fatal notice; False for any other message."""
        if isinstance(message, tuple) and message and message[0] == "ready":
            self.ready = True
            return True
        if isinstance(message, tuple) and message and message[0] == _FATAL:
            self.fatal = str(message[1])
            return True
        return False


def supervise(options: GatewayOptions) -> None:
    """Run ``options.workers`` worker processes until SIGTERM/SIGINT."""
    build_snapshot(options.files, version=1)  # fail fast, with the config error, before forking
    ctx = multiprocessing.get_context("spawn")
    import uvloop

    uvloop.run(_supervise(options, ctx))


async def _supervise(options: GatewayOptions, ctx: Any) -> None:
    from gateway.admin import create_admin_app, serve_admin

    sticky: dict[str, Any] = {}  # the last argument of each sticky worker call, for new workers
    holder = SnapshotHolder(build_snapshot(options.files, version=1))
    broker = SocketBroker(options.bind_address)
    broker.bind_snapshot(holder.current)  # a port something else holds fails here, first

    async def rebind(snapshot: Snapshot) -> None:
        broker.reconcile(snapshot)

    # Worker 0 reports each version's invalid objects; the supervisor only follows its ports.
    reloader = ConfigReloader(options.files, holder, on_swap=rebind, report=False)
    workers: list[_Worker] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def call(name: str, arg: Any) -> list[Any]:
        if is_sticky(name):
            sticky[name] = arg
        live = [w for w in workers if w.process.is_alive()]
        results = await asyncio.gather(*(asyncio.to_thread(w.call, name, arg) for w in live))
        for worker, (ok, answer) in zip(live, results, strict=True):
            if not ok:
                log.warning("worker %d: worker call %s: %s", worker.index, name, answer)
        return [answer for ok, answer in results if ok]

    # Admin hooks first: state they push (sticky calls) reaches every worker before it binds
    # (the workers are spawned below, once the admin API listens).
    await run_admin_start_hooks(AdminContext(holder, options.state_dir, call))

    def scrape() -> bytes:
        states = [s for s in (w.metrics_state() for w in workers) if s is not None]
        return render_states(states)

    def gather_views(path: str) -> list[Any]:
        return [view for w in workers for view in w.views(path)]

    def ready() -> bool:
        for worker in workers:
            worker.poll_ready()
        started = len(workers) == options.workers
        return started and all(w.ready and w.process.is_alive() for w in workers)

    def forward(sig: signal.Signals) -> None:
        for worker in workers:
            if worker.process.pid is not None and worker.process.is_alive():
                os.kill(worker.process.pid, sig)

    pending: set[asyncio.Task[bool]] = set()

    def on_hup() -> None:
        forward(signal.SIGHUP)
        task = asyncio.ensure_future(reloader.reload("SIGHUP"))
        pending.add(task)
        task.add_done_callback(pending.discard)

    loop.add_signal_handler(signal.SIGHUP, on_hup)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    admin = None
    if options.admin is not None:
        try:
            admin = await serve_admin(
                create_admin_app(holder, scrape, ready, gather_views), *options.admin
            )
        except OSError:
            broker.close()
            raise

    def lend_sockets(worker: _Worker) -> None:
        if not broker.serve(worker.ports, worker.process.pid or 0):
            loop.remove_reader(worker.ports.fileno())

    def spawn(index: int) -> _Worker:
        worker = _Worker(ctx, options, index, tuple(sticky.items()))
        loop.add_reader(worker.ports.fileno(), lend_sockets, worker)
        return worker

    workers.extend(spawn(i) for i in range(options.workers))
    watch = asyncio.create_task(reloader.watch(options.watch_interval))
    log.info("supervising %d workers", len(workers))
    fatal: str | None = None
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=1.0)
        for i, worker in enumerate(workers):
            if not stop.is_set() and not worker.process.is_alive():
                worker.poll_ready()
                if worker.fatal is not None:
                    fatal = worker.fatal
                    log.error("worker %d cannot start (%s); stopping", i, fatal)
                    stop.set()
                    continue
                log.error("worker %d exited with %s; restarting", i, worker.process.exitcode)
                with contextlib.suppress(ValueError, OSError):
                    loop.remove_reader(worker.ports.fileno())
                worker.ports.close()
                workers[i] = spawn(i)

    watch.cancel()
    await run_admin_stop_hooks()
    forward(signal.SIGTERM)
    deadline = options.shutdown_grace + 2.0

    def join_all() -> None:
        for worker in workers:
            worker.process.join(deadline)

    await asyncio.to_thread(join_all)
    for worker in workers:
        if worker.process.is_alive():
            worker.process.kill()
    broker.close()
    if admin is not None:
        await admin.close()
    if fatal is not None:
        raise PluginError(fatal)
