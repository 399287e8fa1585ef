"""Plugins: how packages outside ``gateway/`` teach it kinds, stages, admin views, pages, commands.

A plugin is a module-level callable ``register(api: PluginApi) -> None``. It is found through

- the Python entry point group ``ambient.plugins`` of installed distributions
  (``[project.entry-points."ambient.plugins"] inference = "inference_ext.plugin:register"``), and
- the environment variable ``AMBIENT_PLUGINS``: comma-separated ``module:function``, or ``module``
  meaning ``module:register``, for plugins that are not installed distributions.

:func:`load_plugins` runs in every process that compiles config or serves (the ``ambient`` CLI
before it builds its parser, and each ``--workers`` worker, which is spawned and so inherits no
registrations). It is idempotent: a plugin already loaded in this process is not loaded again. A
plugin that cannot be imported or whose ``register`` fails raises :class:`PluginError` naming the
plugin and where it was found, so a process never starts half-configured.

``gateway/`` never imports a plugin; plugins import ``gateway``'s public types.
"""

from __future__ import annotations

import importlib
import logging
import os
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, TypeVar

from gateway.backends.base import BackendFactory, register_backend_kind, registered_kinds
from gateway.compile.reports import ReportProducer, register_report
from gateway.config.kinds import note_raw_kind, register_resource_kind
from gateway.filters.extension import FilterFactory, register_filter_kind, registered_filter_kinds
from gateway.live_status import LiveStatuses
from gateway.observability.genai import GenAiMetrics
from gateway.observability.metrics import (
    MetricsSource,
    register_metrics_source,
    replace_metrics_source,
)
from gateway.route_weights import ROUTE_WEIGHTS, RouteWeights
from gateway.snapshot import SnapshotHolder
from gateway.stages import StageFactory, register_stage_kind

if TYPE_CHECKING:
    from pydantic import BaseModel
    from starlette.requests import Request
    from starlette.responses import Response

    Endpoint = Callable[[Request], Awaitable[Response]]

log = logging.getLogger("gateway.plugins")

ENTRY_POINT_GROUP = "ambient.plugins"
ENV_VAR = "AMBIENT_PLUGINS"
ADMIN_PREFIX = "/plugins"  # every plugin admin route is served under it
UI_PREFIX = "/ui"  # plugin pages for people (HTML), one path segment each
_UI_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")

T = TypeVar("T")
Hook = Callable[[], Awaitable[None]]
Caller = Callable[[str, Any], Awaitable[list[Any]]]


class PluginError(Exception):
    """A plugin could not be loaded, registered or started; the message names it."""


@dataclass(frozen=True, slots=True)
class PluginSpec:
    """A plugin to load: its name, ``module:function``, and where it was found."""

    name: str
    reference: str
    source: str  # "entry point ambient.plugins: name = ref" or "AMBIENT_PLUGINS"

    def __str__(self) -> str:
        return f"plugin {self.name!r} ({self.source})"


@dataclass(frozen=True, slots=True)
class AdminRoute:
    """A plugin's admin endpoint, served at ``ADMIN_PREFIX + path``."""

    plugin: str
    path: str
    endpoint: Endpoint
    methods: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AdminView:
    """A plugin's view of serving-process state, served at ``ADMIN_PREFIX + path``.

    ``view()`` runs in every process that serves traffic (each ``--workers`` worker; the one
    process otherwise) and returns something JSON-able; ``merge`` makes one answer of the list
    of views, one per process (by default: the only view as it is, or ``{"workers": views}``).
    """

    plugin: str
    path: str
    view: Callable[[], Any]
    merge: Callable[[list[Any]], Any]


def merge_views(views: list[Any]) -> Any:
    """The default ``merge`` of an admin view: one process's view as is, several in a list."""
    return views[0] if len(views) == 1 else {"workers": views}


@dataclass(frozen=True, slots=True)
class Command:
    """A plugin's ``ambient <name>`` subcommand."""

    plugin: str
    name: str
    help: str
    configure: Callable[[Any], None]  # gets the subcommand's argparse.ArgumentParser
    handler: Callable[[Any], int]  # gets the parsed argparse.Namespace; returns the exit code


@dataclass(frozen=True, slots=True)
class LifecycleHook:
    """An ``on_start`` / ``on_stop`` coroutine function and the plugin that registered it."""

    plugin: str
    function: Hook

    def __str__(self) -> str:
        return f"plugin {self.plugin!r}: {getattr(self.function, '__qualname__', self.function)}"


@dataclass(frozen=True, slots=True)
class WorkerCall:
    """A function the admin process can run in every serving process (``PluginApi.worker_call``).

    A ``sticky`` call's last argument is replayed to a worker that (re)starts, before it binds,
    so state pushed from the admin process (e.g. traffic weights) survives a worker restart.
    """

    plugin: str
    name: str
    function: Callable[[Any], Any]
    sticky: bool


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What an ``on_admin_start`` hook gets in the admin process.

    ``holder`` is the admin process's live configuration (reloaded like the workers');
    ``state_dir`` is ``--state-dir`` (None: keep nothing across restarts); ``await call(name,
    arg)`` runs the worker call ``name`` in every serving process and returns their answers (one
    per process that answered; this process's only answer with one process). ``statuses`` takes
    the run-time statuses of the kinds registered with ``PluginApi.status_kind``
    (:mod:`gateway.live_status`).
    """

    holder: SnapshotHolder
    state_dir: str | None
    call: Caller
    statuses: LiveStatuses = field(default_factory=LiveStatuses)


AdminHook = Callable[[AdminContext], Awaitable[None]]


@dataclass(slots=True)
class _Registry:
    """Everything plugins registered in this process, besides the kind registries."""

    loaded: dict[str, PluginSpec] = field(default_factory=dict)  # by reference
    provides: dict[str, list[str]] = field(default_factory=dict)  # plugin name -> what
    admin_routes: list[AdminRoute] = field(default_factory=list)
    admin_views: list[AdminView] = field(default_factory=list)
    ui_pages: list[AdminRoute] = field(default_factory=list)
    commands: dict[str, Command] = field(default_factory=dict)
    start_hooks: list[LifecycleHook] = field(default_factory=list)
    stop_hooks: list[LifecycleHook] = field(default_factory=list)
    admin_start_hooks: list[tuple[str, AdminHook]] = field(default_factory=list)
    admin_stop_hooks: list[LifecycleHook] = field(default_factory=list)
    worker_calls: dict[str, WorkerCall] = field(default_factory=dict)
    states: dict[str, object] = field(default_factory=dict)
    status_kinds: dict[tuple[str, str], type[BaseModel]] = field(default_factory=dict)


_REGISTRY = _Registry()
_GENAI = "gateway.genai"  # the GenAI metrics' key among the process states


class PluginApi:
    """What ``register(api)`` may call. Every method refuses a duplicate with an error."""

    def __init__(self, spec: PluginSpec) -> None:
        self.spec = spec
        self._provides = _REGISTRY.provides.setdefault(spec.name, [])

    def backend_kind(self, group: str, kind: str, factory: BackendFactory) -> None:
        """A backendRef kind (``gateway.backends.base``); its objects load raw, unwarned."""
        if (group, kind) in registered_kinds():
            raise PluginError(f"backend kind {_gk(group, kind)} is already registered")
        register_backend_kind(group, kind, factory)
        note_raw_kind(group, kind)
        self._provides.append(f"backend kind {_gk(group, kind)}")

    def filter_kind(self, group: str, kind: str, factory: FilterFactory) -> None:
        """An ExtensionRef filter kind (``gateway.filters.extension``)."""
        if (group, kind) in registered_filter_kinds():
            raise PluginError(f"filter kind {_gk(group, kind)} is already registered")
        register_filter_kind(group, kind, factory)
        note_raw_kind(group, kind)
        self._provides.append(f"filter kind {_gk(group, kind)}")

    def resource_kind(
        self,
        group: str,
        kind: str,
        versions: Iterable[str],
        model: type[BaseModel],
        *,
        cluster_scoped: bool = False,
    ) -> None:
        """A kind validated at load by ``model`` like the core kinds; reachable from compile and
        factories through ``ResolveContext.typed`` (and raw through ``find``/``list``)."""
        register_resource_kind(group, kind, versions, model, cluster_scoped=cluster_scoped)
        self._provides.append(f"resource kind {_gk(group, kind)}")

    def status_kind(self, group: str, kind: str, model: type[BaseModel]) -> None:
        """Objects of this kind get a status the plugin publishes at run time
        (``AdminContext.statuses``), shaped as ``model``: the CRD's status schema. In cluster
        mode the Lease holder writes it (RBAC: ``<plural>/status`` update)."""
        if (group, kind) in _REGISTRY.status_kinds:
            raise PluginError(f"status kind {_gk(group, kind)} is already registered")
        _REGISTRY.status_kinds[(group, kind)] = model
        self._provides.append(f"status kind {_gk(group, kind)}")

    def stage_kind(self, group: str, kind: str, factory: StageFactory) -> None:
        """A pre-route policy kind (``gateway.stages``), attached to Gateways by targetRefs."""
        register_stage_kind(group, kind, factory)
        note_raw_kind(group, kind)
        self._provides.append(f"stage kind {_gk(group, kind)}")

    def report(self, name: str, producer: ReportProducer) -> None:
        """Statuses (and a ``/config_dump`` part) for the plugin's own objects, made at every
        compile from the configuration and the routes' backendRefs (``gateway.compile.reports``).
        """
        try:
            register_report(name, producer)
        except ValueError as exc:
            raise PluginError(str(exc)) from exc
        self._provides.append(f"report {name}")

    def metrics(self, name: str, source: MetricsSource) -> None:
        """Metrics rendered on the gateway's ``/metrics`` from every worker's state
        (``gateway.observability.metrics.MetricsSource``)."""
        try:
            register_metrics_source(name, source)
        except ValueError as exc:
            raise PluginError(str(exc)) from exc
        self._provides.append(f"metrics {name}")

    def admin_route(self, path: str, endpoint: Endpoint, methods: Iterable[str] = ("GET",)) -> None:
        """A Starlette endpoint on the admin API at ``/plugins<path>``."""
        self._check_admin_path(path)
        verbs = tuple(m.upper() for m in methods)
        _REGISTRY.admin_routes.append(AdminRoute(self.spec.name, path, endpoint, verbs))
        self._provides.append(f"admin route {ADMIN_PREFIX}{path}")

    def admin_view(
        self,
        path: str,
        view: Callable[[], Any],
        merge: Callable[[list[Any]], Any] = merge_views,
    ) -> None:
        """``GET /plugins<path>`` answers ``merge([view() in each serving process])`` as JSON:
        state that lives where traffic is served (e.g. an endpoint picker's decisions), which
        with ``--workers N`` is not the admin API's own process. ``view`` runs in the serving
        event loop and must be quick."""
        self._check_admin_path(path)
        _REGISTRY.admin_views.append(AdminView(self.spec.name, path, view, merge))
        self._provides.append(f"admin view {ADMIN_PREFIX}{path}")

    def ui_page(self, name: str, endpoint: Endpoint) -> None:
        """A page for people on the admin API at ``/ui/<name>`` (GET), e.g. an HTML dashboard."""
        if not _UI_NAME.fullmatch(name):
            raise PluginError(
                f"ui page {name!r}: expected lowercase letters, digits and '-' (one path segment)"
            )
        path = f"/{name}"
        if any(page.path == path for page in _REGISTRY.ui_pages):
            raise PluginError(f"ui page {UI_PREFIX}{path} is already registered")
        _REGISTRY.ui_pages.append(AdminRoute(self.spec.name, path, endpoint, ("GET",)))
        self._provides.append(f"ui page {UI_PREFIX}{path}")

    @staticmethod
    def _check_admin_path(path: str) -> None:
        if not path.startswith("/"):
            raise PluginError(f"admin route {path!r} must start with '/'")
        taken = [r.path for r in _REGISTRY.admin_routes] + [v.path for v in _REGISTRY.admin_views]
        if path in taken:
            raise PluginError(f"admin route {ADMIN_PREFIX}{path} is already registered")

    def command(
        self,
        name: str,
        help: str,
        configure: Callable[[Any], None],
        handler: Callable[[Any], int],
    ) -> None:
        """An ``ambient <name>`` subcommand: ``configure(parser)`` adds its arguments,
        ``handler(args)`` runs it and returns the exit code."""
        if not name or name.startswith("-"):
            raise PluginError(f"command name {name!r} is not a subcommand name")
        if name in _REGISTRY.commands:
            raise PluginError(f"command {name!r} is already registered")
        _REGISTRY.commands[name] = Command(self.spec.name, name, help, configure, handler)
        self._provides.append(f"command {name}")

    def state(self, name: str, factory: Callable[[], T]) -> T:
        """Process-wide state that outlives snapshots: the same object for ``name`` for the life
        of the process (``factory`` runs on the first call only)."""
        if name not in _REGISTRY.states:
            _REGISTRY.states[name] = factory()
        return _REGISTRY.states[name]  # type: ignore[return-value]

    def genai(self) -> GenAiMetrics:
        """This process's OpenTelemetry GenAI metrics (:mod:`gateway.observability.genai`), one
        set of families for every plugin that carries model calls."""
        metrics = _REGISTRY.states.get(_GENAI)
        if not isinstance(metrics, GenAiMetrics):
            metrics = _REGISTRY.states[_GENAI] = GenAiMetrics()
            replace_metrics_source("genai", metrics)
        return metrics

    def route_weights(self) -> RouteWeights:
        """This process's run-time weight overrides of named route rules
        (:mod:`gateway.route_weights`): ``set(route, rule, weights | None)``."""
        return ROUTE_WEIGHTS

    def on_start(self, function: Hook) -> None:
        """Run ``await function()`` in each serving process's event loop before it binds."""
        _REGISTRY.start_hooks.append(LifecycleHook(self.spec.name, function))

    def on_stop(self, function: Hook) -> None:
        """Run ``await function()`` when a serving process stops (after its listeners close)."""
        _REGISTRY.stop_hooks.append(LifecycleHook(self.spec.name, function))

    def worker_call(
        self, name: str, function: Callable[[Any], Any], *, sticky: bool = False
    ) -> None:
        """``function(arg)`` made callable from the admin process in every serving process
        (``AdminContext.call``); it runs in the serving event loop, must be quick and return
        something picklable. ``sticky``: the last call is replayed to a (re)starting worker."""
        if name in _REGISTRY.worker_calls:
            raise PluginError(f"worker call {name!r} is already registered")
        _REGISTRY.worker_calls[name] = WorkerCall(self.spec.name, name, function, sticky)
        self._provides.append(f"worker call {name}")

    def on_admin_start(self, function: AdminHook) -> None:
        """Run ``await function(context)`` once in the admin process (the ``--workers``
        supervisor, or the one serving process) before any worker serves."""
        _REGISTRY.admin_start_hooks.append((self.spec.name, function))

    def on_admin_stop(self, function: Hook) -> None:
        """Run ``await function()`` when the admin process stops."""
        _REGISTRY.admin_stop_hooks.append(LifecycleHook(self.spec.name, function))


def _gk(group: str, kind: str) -> str:
    return f"{group or 'core'}/{kind}"


def discover(environ: Mapping[str, str] | None = None) -> list[PluginSpec]:
    """Plugins named by the entry point group, then by ``AMBIENT_PLUGINS``."""
    found = [
        PluginSpec(
            ep.name,
            f"{ep.module}:{ep.attr}" if ep.attr else f"{ep.module}:register",
            f"entry point {ENTRY_POINT_GROUP}: {ep.name} = {ep.value}",
        )
        for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda ep: ep.name)
    ]
    value = (os.environ if environ is None else environ).get(ENV_VAR, "")
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        module, sep, function = item.partition(":")
        if not module or (sep and not function) or ":" in function:
            raise PluginError(
                f"{ENV_VAR}: {item!r} is not 'module:function' or 'module' "
                "(meaning module:register)"
            )
        found.append(PluginSpec(item, f"{module}:{function or 'register'}", ENV_VAR))
    return found


def load_plugins(specs: Iterable[PluginSpec] | None = None) -> list[PluginSpec]:
    """Load ``specs`` (by default every discovered plugin) not loaded yet; returns those loaded.

    Raises PluginError naming the plugin and its source when one cannot be imported or fails to
    register.
    """
    loaded: list[PluginSpec] = []
    for spec in discover() if specs is None else specs:
        if spec.reference in _REGISTRY.loaded:
            continue
        register = _resolve(spec)
        try:
            register(PluginApi(spec))
        except Exception as exc:
            raise PluginError(f"{spec}: register failed: {exc}") from exc
        _REGISTRY.loaded[spec.reference] = spec
        loaded.append(spec)
        provides = ", ".join(_REGISTRY.provides.get(spec.name, [])) or "nothing"
        log.info("loaded %s: %s", spec, provides)
    return loaded


def _resolve(spec: PluginSpec) -> Callable[[PluginApi], None]:
    """Import the plugin's module and find its register function."""
    module_name, _, attribute = spec.reference.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise PluginError(f"{spec}: cannot import {module_name}: {exc}") from exc
    target: Any = module
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise PluginError(f"{spec}: module {module_name} has no attribute {attribute!r}")
    if not callable(target):
        raise PluginError(f"{spec}: {spec.reference} is not callable")
    return target


def loaded_plugins() -> list[PluginSpec]:
    """Every plugin loaded in this process, in load order."""
    return list(_REGISTRY.loaded.values())


def plugin_provides(name: str) -> list[str]:
    """What a loaded plugin registered, e.g. ``["stage kind example.dev/Foo"]``."""
    return list(_REGISTRY.provides.get(name, []))


def admin_routes() -> list[AdminRoute]:
    """Plugin admin endpoints, in registration order."""
    return list(_REGISTRY.admin_routes)


def admin_views() -> list[AdminView]:
    """Plugin admin views (of serving-process state), in registration order."""
    return list(_REGISTRY.admin_views)


def ui_pages() -> list[AdminRoute]:
    """Plugin pages served at ``UI_PREFIX + path``, in registration order."""
    return list(_REGISTRY.ui_pages)


def local_views(path: str) -> list[Any]:
    """The admin view at ``path`` as this process sees it (a one-element list), or [] if no
    view has that path."""
    return [v.view() for v in _REGISTRY.admin_views if v.path == path]


def local_call(name: str, arg: Any) -> Any:
    """Run the worker call ``name`` in this process; PluginError if no plugin registered it."""
    call = _REGISTRY.worker_calls.get(name)
    if call is None:
        raise PluginError(f"no worker call {name!r} is registered")
    return call.function(arg)


def is_sticky(name: str) -> bool:
    """True when the worker call ``name`` is registered as sticky."""
    call = _REGISTRY.worker_calls.get(name)
    return call is not None and call.sticky


def status_kinds() -> dict[tuple[str, str], type[BaseModel]]:
    """(group, kind) -> status model of the kinds plugins publish run-time statuses for."""
    return dict(_REGISTRY.status_kinds)


def commands() -> list[Command]:
    """Plugin subcommands, in registration order."""
    return list(_REGISTRY.commands.values())


async def run_start_hooks() -> None:
    """Await every ``on_start`` hook in registration order; PluginError names a failing one."""
    for hook in _REGISTRY.start_hooks:
        try:
            await hook.function()
        except Exception as exc:
            raise PluginError(f"{hook}: on_start failed: {exc}") from exc


async def run_stop_hooks() -> None:
    """Await every ``on_stop`` hook, last registered first; a failure is logged, not raised."""
    for hook in reversed(_REGISTRY.stop_hooks):
        try:
            await hook.function()
        except Exception:
            log.exception("%s: on_stop failed", hook)


async def run_admin_start_hooks(context: AdminContext) -> None:
    """Await every ``on_admin_start`` hook in order; PluginError names a failing one."""
    for plugin, function in _REGISTRY.admin_start_hooks:
        try:
            await function(context)
        except Exception as exc:
            name = getattr(function, "__qualname__", function)
            raise PluginError(f"plugin {plugin!r}: {name}: on_admin_start failed: {exc}") from exc


async def run_admin_stop_hooks() -> None:
    """Await every ``on_admin_stop`` hook, last registered first; a failure is logged."""
    for hook in reversed(_REGISTRY.admin_stop_hooks):
        try:
            await hook.function()
        except Exception:
            log.exception("%s: on_admin_stop failed", hook)
