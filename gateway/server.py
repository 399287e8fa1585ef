"""Run the gateway: listeners from the snapshot, hot reload, the admin API and signals.

One process serves every listener on one event loop. ``--workers N`` runs N such processes
sharing the listening sockets the supervisor bound (see ``gateway.workers``); the admin API then
lives in the supervising process and merges the workers' metrics when scraped. Plugins'
``on_start`` and ``on_stop`` hooks run in each serving process (``gateway.plugins``), and so do
the lifespans of in-gateway responder apps: startup before a snapshot that holds them serves,
shutdown once no current snapshot does (``gateway.proxy.lifespan``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.admin import AdminServer, create_admin_app, serve_admin
from gateway.live_status import LiveStatuses
from gateway.observability.telemetry import build_telemetry
from gateway.plugins import (
    AdminContext,
    local_call,
    run_admin_start_hooks,
    run_admin_stop_hooks,
    run_start_hooks,
    run_stop_hooks,
)
from gateway.proxy.lifespan import Lifespans
from gateway.proxy.listeners import ListenerManager, ProxyOptions, SocketSource, bind_here
from gateway.reload import ConfigReloader, build_snapshot, report_statuses
from gateway.snapshot import Snapshot, SnapshotHolder
from gateway.waypoint.runtime import WaypointOptions, WaypointRuntime

if TYPE_CHECKING:
    from gateway.controller import ClusterController, ClusterOptions

log = logging.getLogger("gateway.server")


@dataclass
class GatewayOptions:
    """Everything ``ambient gateway`` takes on its command line."""

    files: list[str]
    admin: tuple[str, int] | None = ("127.0.0.1", 15000)
    bind_address: str = "0.0.0.0"
    workers: int = 1
    log_format: str = "text"
    access_log: bool = False
    watch_interval: float = 0.5
    shutdown_grace: float = 5.0
    state_dir: str | None = None  # where plugins keep state across restarts (None: nowhere)
    proxy: ProxyOptions = field(default_factory=ProxyOptions)
    # Log the objects each configuration version leaves invalid (with --workers N: one worker).
    report_config: bool = True
    # Waypoint mode: serve HBONE as this node's instance of an istio-waypoint Gateway.
    waypoint: WaypointOptions | None = None
    # Cluster mode: resources from the Kubernetes API instead of ``files`` (gateway.controller).
    cluster: ClusterOptions | None = None


def parse_hostport(value: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``PORT`` into a pair; raises ValueError naming the problem."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = default_host, value
    host = host.strip("[]") or default_host
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


class GatewayProcess:
    """One serving process: snapshot holder, listeners, reloader, optional admin.

    Unless ``admin_process`` is False (a ``--workers`` worker), it is also the admin process and
    runs the plugins' ``on_admin_start`` hooks, whose worker calls then run here.
    """

    def __init__(
        self,
        options: GatewayOptions,
        metrics_source: Callable[[], bytes] | None = None,
        sockets: SocketSource = bind_here,
        *,
        admin_process: bool = True,
    ):
        self.options = options
        self.admin_process = admin_process
        self.holder = SnapshotHolder(_first_snapshot(options))
        self.telemetry = build_telemetry(access_log=options.access_log)
        # This process's in-gateway responder apps: started before a snapshot serves.
        self.lifespans = Lifespans()
        self.listeners = ListenerManager(
            self.holder,
            self.telemetry,
            bind_address=options.bind_address,
            options=options.proxy,
            lifespans=self.lifespans,
            sockets=sockets,
        )
        self.reloader = ConfigReloader(
            options.files,
            self.holder,
            on_swap=self._on_swap,
            before_swap=self.lifespans.prepare,
            report=options.report_config,
        )
        # Run-time statuses the admin process's plugins publish; the cluster records them.
        self.statuses = LiveStatuses()
        self.controller: ClusterController | None = None
        if options.cluster is not None:
            from gateway.controller import ClusterController

            self.controller = ClusterController(options.cluster, self.reloader, self.statuses)
        elif options.report_config:
            report_statuses(self.holder.current, "start")
        self._metrics_source = metrics_source or self.telemetry.metrics.render
        self._ready = False
        self._stop = asyncio.Event()
        self._starting: asyncio.Task[Any] | None = None  # the start a stop signal cancels
        self._tasks: set[asyncio.Task[None]] = set()
        self._admin: AdminServer | None = None
        self.waypoint: WaypointRuntime | None = None

    async def _on_swap(self, snapshot: Snapshot) -> None:
        self.lifespans.activate(snapshot)
        await self.listeners.sync()

    @property
    def ready(self) -> bool:
        """True once every listener of the first snapshot is bound (and, as a waypoint, once its
        certificate is here)."""
        return self._ready and (self.waypoint is None or self.waypoint.has_certificate())

    async def start(self) -> None:
        """Run the plugins' on_start hooks, bind listeners, start the admin API and the watcher.

        A failing on_start hook raises PluginError (naming the plugin) before anything binds; a
        port something else holds raises PortInUse (naming the port, its setting and holder).
        """
        if self.admin_process:
            context = AdminContext(self.holder, self.options.state_dir, _call_here, self.statuses)
            await run_admin_start_hooks(context)
        await run_start_hooks()
        await self.lifespans.prepare(self.holder.current)
        self.lifespans.activate(self.holder.current)
        # The admin port first: when it is taken, no listener has been announced as serving.
        if self.options.admin is not None:
            app = create_admin_app(self.holder, self._metrics_source, lambda: self.ready)
            host, port = self.options.admin
            self._admin = await serve_admin(app, host, port)
        if self.controller is not None:
            await self.controller.start()  # the cluster's first snapshot, before binding
        await self.listeners.sync(fail_fast=True)
        if self.options.waypoint is not None:
            self.waypoint = WaypointRuntime(self.options.waypoint, self.listeners)
            await self.waypoint.start()
        if self.controller is not None:
            self._spawn(self.controller.run())
        else:
            self._spawn(self.reloader.watch(self.options.watch_interval))
        self._ready = True
        ports = sorted({listener.port for listener in self.holder.current.listeners})
        log.info("gateway serving ports %s on %s", ports, self.options.bind_address)

    async def start_unless_stopped(self) -> bool:
        """:meth:`start`, given up when SIGTERM/SIGINT come first: a cluster-mode gateway retries
        an unreachable API server until it answers, and must still stop when asked. The signal
        cancels the start where it waits; False when stopped so (what had started is closed)."""
        self._starting = asyncio.current_task()
        try:
            await self.start()
        except asyncio.CancelledError:
            if not self._stop.is_set():
                raise
            log.info("stopped before the gateway started")
            await self.run_until_stopped()
            return False
        finally:
            self._starting = None
        return True

    def _stop_signal(self) -> None:
        self._stop.set()
        if self._starting is not None:
            self._starting.cancel()

    def install_signals(self) -> None:
        """SIGHUP reloads; SIGTERM and SIGINT drain and stop."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._sighup()))
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop_signal)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task that is forgotten once done (SIGHUPs must not pile up)."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sighup(self) -> None:
        await self.reloader.reload("SIGHUP")

    def stop(self) -> None:
        """Ask :meth:`run_until_stopped` to drain and return."""
        self._stop.set()

    async def run_until_stopped(self) -> None:
        """Serve until stopped, then drain in-flight requests within the grace period."""
        await self._stop.wait()
        self._ready = False
        log.info("draining (grace %.1fs)", self.options.shutdown_grace)
        tasks = list(self._tasks)  # done callbacks shrink the set while we wait
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.controller is not None:
            await self.controller.stop()
        if self.waypoint is not None:
            self.waypoint.drain()  # tunnels' requests finish within the grace, as listeners' do
        await self.listeners.close(self.options.shutdown_grace)
        if self.waypoint is not None:
            await self.waypoint.stop()
        await self.lifespans.close(self.options.shutdown_grace)
        if self.admin_process:
            await run_admin_stop_hooks()
        await run_stop_hooks()
        if self._admin is not None:
            await self._admin.close()
        self.telemetry.close()


def _first_snapshot(options: GatewayOptions) -> Snapshot:
    """The files' snapshot; in cluster mode an empty one until the cluster is read."""
    if options.cluster is None:
        return build_snapshot(options.files, version=1)
    from gateway.compile import compile_snapshot
    from gateway.config import ResourceSet

    return compile_snapshot(ResourceSet(), version=1)


async def _call_here(name: str, arg: Any) -> list[Any]:
    """``AdminContext.call`` when this process is the only serving one."""
    return [local_call(name, arg)]


async def serve(options: GatewayOptions) -> None:
    """Run one gateway process until SIGTERM/SIGINT."""
    process = GatewayProcess(options)
    process.install_signals()
    if await process.start_unless_stopped():
        await process.run_until_stopped()


def run(options: GatewayOptions) -> None:
    """Entry point for ``ambient gateway``: uvloop, one process or a worker supervisor."""
    if options.workers > 1:
        from gateway.workers import supervise

        supervise(options)
        return
    import uvloop

    uvloop.run(serve(options))
