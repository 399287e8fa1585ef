"""The plugin registry: discovery, loading once, loud failures, duplicates, state and hooks."""

from __future__ import annotations

import logging

import pytest

from gateway.backends.base import registered_kinds
from gateway.compile import compile_snapshot
from gateway.config.models import Model
from gateway.config.resources import ResourceSet
from gateway.live_status import LiveStatuses, ObjectRef
from gateway.plugins import (
    ENV_VAR,
    AdminContext,
    PluginApi,
    PluginError,
    PluginSpec,
    admin_routes,
    admin_views,
    commands,
    discover,
    is_sticky,
    load_plugins,
    loaded_plugins,
    local_call,
    plugin_provides,
    run_admin_start_hooks,
    run_admin_stop_hooks,
    run_start_hooks,
    run_stop_hooks,
    status_kinds,
    ui_pages,
)
from gateway.snapshot import SnapshotHolder
from gateway.stages import stage_kinds
from tests.fixtures.plugin import Counter
from tests.fixtures.plugins import TEST_PLUGIN, plugin_sandbox, test_plugin  # noqa: F401

pytestmark = pytest.mark.usefixtures("plugin_sandbox")


def spec(reference: str, name: str = "p") -> PluginSpec:
    return PluginSpec(name, reference, ENV_VAR)


def test_env_var_names_module_function_or_module_meaning_register() -> None:
    found = discover(
        {ENV_VAR: " tests.fixtures.plugin , tests.fixtures.broken_plugins:fail_start,"}
    )
    installed = discover({})  # entry points of installed distributions (the inference extension)
    assert found[: len(installed)] == installed
    assert [(s.name, s.reference, s.source) for s in found[len(installed) :]] == [
        ("tests.fixtures.plugin", "tests.fixtures.plugin:register", ENV_VAR),
        (
            "tests.fixtures.broken_plugins:fail_start",
            "tests.fixtures.broken_plugins:fail_start",
            ENV_VAR,
        ),
    ]
    assert all(s.source.startswith("entry point") for s in installed)


@pytest.mark.parametrize("value", ["a:b:c", "mod:", ":func"])
def test_malformed_env_var_entry_is_an_error(value: str) -> None:
    with pytest.raises(PluginError, match=f"{ENV_VAR}: '{value}' is not 'module:function'"):
        discover({ENV_VAR: value})


def test_loading_registers_everything_once_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="gateway.plugins"):
        assert load_plugins([TEST_PLUGIN]) == [TEST_PLUGIN]
    assert "loaded plugin 'test' (tests): resource kind test.ambient.dev/StaticBackend" in (
        caplog.text
    )
    assert ("test.ambient.dev", "StaticBackend") in registered_kinds()
    assert [(g, k) for g, k, _ in stage_kinds()][-2:] == [
        ("test.ambient.dev", "ModelHeader"),
        ("test.ambient.dev", "HeaderStamp"),
    ]
    assert [r.path for r in admin_routes()] == ["/test/state"]
    assert [v.path for v in admin_views()] == ["/test/served"]
    assert [p.path for p in ui_pages()] == ["/test"]
    assert [c.name for c in commands()] == ["test-hello"]
    assert plugin_provides("test") == [
        "resource kind test.ambient.dev/StaticBackend",
        "backend kind test.ambient.dev/StaticBackend",
        "stage kind test.ambient.dev/ModelHeader",
        "stage kind test.ambient.dev/HeaderStamp",
        "admin route /plugins/test/state",
        "admin view /plugins/test/served",
        "ui page /ui/test",
        "command test-hello",
    ]
    # Idempotent: a second load (same reference, any name) registers nothing again.
    assert load_plugins([TEST_PLUGIN, spec("tests.fixtures.plugin:register", "again")]) == []
    assert loaded_plugins() == [TEST_PLUGIN]


def test_a_module_that_cannot_be_imported_names_the_plugin_and_its_source() -> None:
    entry = PluginSpec("missing", "no_such_module:register", "entry point ambient.plugins: x = y")
    with pytest.raises(PluginError) as info:
        load_plugins([entry])
    assert str(info.value) == (
        "plugin 'missing' (entry point ambient.plugins: x = y): cannot import no_such_module: "
        "No module named 'no_such_module'"
    )
    assert loaded_plugins() == []


def test_a_missing_function_names_the_plugin() -> None:
    with pytest.raises(
        PluginError, match=r"module tests\.fixtures\.plugin has no attribute 'nope'"
    ):
        load_plugins([spec("tests.fixtures.plugin:nope")])


def test_a_failing_register_names_the_plugin_and_keeps_the_cause() -> None:
    with pytest.raises(PluginError) as info:
        load_plugins([spec("tests.fixtures.broken_plugins:fail_register", "broken")])
    assert str(info.value) == (
        f"plugin 'broken' ({ENV_VAR}): register failed: no model server configured"
    )
    assert isinstance(info.value.__cause__, RuntimeError)
    assert loaded_plugins() == []


@pytest.mark.usefixtures("test_plugin")
def test_a_second_plugin_registering_the_same_kind_is_refused() -> None:
    with pytest.raises(PluginError) as info:
        load_plugins([spec("tests.fixtures.broken_plugins:duplicate_backend", "twin")])
    assert str(info.value) == (
        f"plugin 'twin' ({ENV_VAR}): register failed: "
        "backend kind test.ambient.dev/StaticBackend is already registered"
    )


def test_duplicate_admin_routes_and_commands_are_refused() -> None:
    api = PluginApi(spec("x:register", "x"))

    async def endpoint(request: object) -> None:
        return None

    api.admin_route("/a", endpoint)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="admin route /plugins/a is already registered"):
        api.admin_route("/a", endpoint)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="must start with '/'"):
        api.admin_route("b", endpoint)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="admin route /plugins/a is already registered"):
        api.admin_view("/a", dict)  # a view and a route share the /plugins paths
    api.admin_view("/v", dict)
    with pytest.raises(PluginError, match="admin route /plugins/v is already registered"):
        api.admin_route("/v", endpoint)  # type: ignore[arg-type]
    api.command("c", "help", lambda parser: None, lambda args: 0)
    with pytest.raises(PluginError, match="command 'c' is already registered"):
        api.command("c", "help", lambda parser: None, lambda args: 0)


def test_ui_pages_are_one_path_segment_and_duplicates_are_refused() -> None:
    api = PluginApi(spec("x:register", "x"))

    async def endpoint(request: object) -> None:
        return None

    api.ui_page("rollouts", endpoint)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="ui page /ui/rollouts is already registered"):
        api.ui_page("rollouts", endpoint)  # type: ignore[arg-type]
    for bad in ("/rollouts", "a/b", "Rollouts", ""):
        with pytest.raises(PluginError, match="lowercase letters, digits and '-'"):
            api.ui_page(bad, endpoint)  # type: ignore[arg-type]
    api.admin_route("/rollouts", endpoint)  # type: ignore[arg-type]  # another namespace
    assert [(p.plugin, p.path, p.methods) for p in ui_pages()] == [("x", "/rollouts", ("GET",))]


def test_state_is_one_object_per_name_for_the_life_of_the_process() -> None:
    first = PluginApi(spec("x:register", "x")).state("shared", Counter)
    again = PluginApi(spec("y:register", "y")).state("shared", lambda: pytest.fail("rebuilt"))
    assert again is first
    assert PluginApi(spec("x:register", "x")).state("other", Counter) is not first


async def test_start_hooks_run_in_order_and_a_failure_names_the_plugin() -> None:
    events: list[str] = []
    api = PluginApi(spec("x:register", "scraper"))

    async def first() -> None:
        events.append("first")

    async def broken() -> None:
        raise ConnectionError("cannot reach 10.0.0.1:9090")

    api.on_start(first)
    await run_start_hooks()
    assert events == ["first"]
    api.on_start(broken)
    with pytest.raises(PluginError) as info:
        await run_start_hooks()
    assert "plugin 'scraper'" in str(info.value)
    assert "broken: on_start failed: cannot reach 10.0.0.1:9090" in str(info.value)


async def test_stop_hooks_run_last_first_and_a_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    events: list[str] = []
    api = PluginApi(spec("x:register", "sessions"))

    async def flush() -> None:
        events.append("flush")

    async def broken() -> None:
        raise RuntimeError("disk full")

    async def close() -> None:
        events.append("close")

    api.on_stop(flush)
    api.on_stop(broken)
    api.on_stop(close)
    with caplog.at_level(logging.ERROR, logger="gateway.plugins"):
        await run_stop_hooks()
    assert events == ["close", "flush"]
    assert "plugin 'sessions'" in caplog.text and "on_stop failed" in caplog.text


def test_worker_calls_run_here_by_name_and_duplicates_or_unknown_names_are_errors() -> None:
    api = PluginApi(spec("x:register", "x"))
    api.worker_call("double", lambda n: n * 2)
    api.worker_call("push", lambda v: v, sticky=True)
    assert local_call("double", 21) == 42
    assert (is_sticky("push"), is_sticky("double"), is_sticky("nope")) == (True, False, False)
    assert "worker call double" in plugin_provides("x")
    with pytest.raises(PluginError, match="worker call 'double' is already registered"):
        api.worker_call("double", lambda n: n)
    with pytest.raises(PluginError, match="no worker call 'nope' is registered"):
        local_call("nope", None)


class CanaryStatus(Model):
    phase: str


def test_status_kinds_are_registered_once_and_published_statuses_reach_the_recorder() -> None:
    api = PluginApi(spec("x:register", "x"))
    api.status_kind("example.dev", "Canary", CanaryStatus)
    assert status_kinds() == {("example.dev", "Canary"): CanaryStatus}
    assert "status kind example.dev/Canary" in plugin_provides("x")
    with pytest.raises(PluginError, match=r"status kind example\.dev/Canary is already registered"):
        api.status_kind("example.dev", "Canary", CanaryStatus)

    statuses = LiveStatuses()
    ref = ObjectRef("example.dev", "Canary", "default", "c1")
    statuses.publish(ref, {"phase": "Early"})  # before a source is attached: kept, not heard
    assert statuses.leads() and statuses.recorded(ref) is None  # alone: its own statuses count
    heard: list[int] = []
    leading = [False]
    statuses.record_with(
        lambda r: {"phase": "Saved"} if r == ref else None,
        lambda: heard.append(1),
        lambda: leading[0],
    )
    assert statuses.recorded(ref) == {"phase": "Saved"} and not statuses.leads()
    leading[0] = True
    assert statuses.leads()
    statuses.publish(ref, {"phase": "Early"})  # unchanged: nobody hears of it
    statuses.publish(ref, {"phase": "Late"})
    assert heard == [1] and statuses.published() == {ref: {"phase": "Late"}}
    statuses.forget(ref)
    assert statuses.published() == {}


async def test_admin_hooks_get_the_context_and_a_failing_start_names_the_plugin() -> None:
    seen: list[AdminContext] = []
    api = PluginApi(spec("x:register", "controller"))

    async def start(context: AdminContext) -> None:
        seen.append(context)

    async def stop() -> None:
        seen.clear()

    async def broken(context: AdminContext) -> None:
        raise OSError("state dir /nope is read-only")

    async def call(name: str, arg: object) -> list[object]:
        return [arg]

    context = AdminContext(SnapshotHolder(compile_snapshot(ResourceSet(), 1)), "/tmp/s", call)
    api.on_admin_start(start)
    api.on_admin_stop(stop)
    await run_admin_start_hooks(context)
    assert seen == [context] and await seen[0].call("x", 1) == [1]
    await run_admin_stop_hooks()
    assert seen == []
    api.on_admin_start(broken)
    with pytest.raises(PluginError) as info:
        await run_admin_start_hooks(context)
    assert "plugin 'controller'" in str(info.value)
    assert "on_admin_start failed: state dir /nope is read-only" in str(info.value)
